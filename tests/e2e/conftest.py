"""Markers for the end-to-end tests (they run real Pants, and some a BuildGrid server)."""


def pytest_configure(config):  # type: ignore[no-untyped-def]
    config.addinivalue_line(
        "markers", "slow: end-to-end test that runs real Pants in scratch repos (minutes); deselect with -m 'not slow'"
    )
