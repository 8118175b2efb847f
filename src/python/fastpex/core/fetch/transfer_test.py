"""The partial writer: every byte lands, with O_DIRECT and through the page cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fastpex.core.fetch import transfer as transfer_module
from fastpex.core.fetch.transfer import MAX_READ, PartialWriter


@pytest.mark.parametrize("direct", [True, False])
def test_partial_writer_keeps_every_byte(direct: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transfer_module, "USE_DIRECT_IO", direct)
    data = os.urandom(3 * MAX_READ + 12345)
    part = tmp_path / "x.part"
    block = MAX_READ
    writer = PartialWriter(part, append=False)
    assert writer.direct is (direct and writer.direct)  # O_DIRECT only when enabled (and supported)
    writer.write(memoryview(data)[:block])
    writer.write(memoryview(data)[block : 2 * block])
    writer.write(memoryview(data)[2 * block : 2 * block + 777])  # short: through the page cache
    writer.close()
    # A resume from an unaligned offset appends through the page cache.
    writer = PartialWriter(part, append=True)
    assert not writer.direct
    writer.write(memoryview(data)[2 * block + 777 :])
    writer.close()
    assert part.read_bytes() == data
