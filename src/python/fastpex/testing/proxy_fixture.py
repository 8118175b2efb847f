"""A real HTTP proxy on loopback (Debian's `tinyproxy`) and a test CA, for the proxy tests.

`Tinyproxy` runs tinyproxy in the foreground with a config of its own: a free port on
127.0.0.1, a log file the test reads (`requests()` lists what went through it), `ConnectPort`
for the test's https port (Debian's default allows CONNECT only to 443 and 563), optional
basic auth. A machine without tinyproxy fails the test with the install hint: it is a required
test dependency (`.ci/run` installs it), not an optional one.

`TestCA` makes a CA and a server certificate for one IP address with the `openssl` CLI.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Tuple

__all__ = ["INSTALL_HINT", "TestCA", "Tinyproxy", "free_port"]

INSTALL_HINT = "tinyproxy is not installed; the proxy tests need it: `apt-get install -y tinyproxy`"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Tinyproxy:
    """`with Tinyproxy(tmp_path, connect_ports=[port]) as proxy: proxy.url ...`"""

    def __init__(
        self,
        workdir: Path,
        *,
        connect_ports: Iterable[int] = (),
        basic_auth: Optional[Tuple[str, str]] = None,
    ) -> None:
        binary = shutil.which("tinyproxy") or next(
            (p for p in ("/usr/bin/tinyproxy", "/usr/sbin/tinyproxy") if os.path.exists(p)), None
        )
        if binary is None:
            raise AssertionError(INSTALL_HINT)  # fail, never skip
        self.binary = binary
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_file = self.dir / "tinyproxy.log"
        self.connect_ports = tuple(connect_ports)
        self.basic_auth = basic_auth
        self.port = 0
        self._proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        """The proxy URL without credentials."""
        return f"http://127.0.0.1:{self.port}"

    def url_with_credentials(self, user: str, password: str) -> str:
        return f"http://{user}:{password}@127.0.0.1:{self.port}"

    def start(self) -> "Tinyproxy":
        self.port = free_port()
        lines = [
            f"Port {self.port}",
            "Listen 127.0.0.1",
            "Timeout 60",
            f'LogFile "{self.log_file}"',
            "LogLevel Info",
            "MaxClients 64",
            "Allow 127.0.0.1",
            "DisableViaHeader Yes",
            *(f"ConnectPort {p}" for p in self.connect_ports),
        ]
        if self.basic_auth:
            lines.append(f"BasicAuth {self.basic_auth[0]} {self.basic_auth[1]}")
        conf = self.dir / "tinyproxy.conf"
        conf.write_text("\n".join(lines) + "\n")
        self._proc = subprocess.Popen(
            [self.binary, "-d", "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "tinyproxy.stderr", "wb"),
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise AssertionError(
                    f"tinyproxy exited with {self._proc.returncode}: "
                    f"{(self.dir / 'tinyproxy.stderr').read_text(errors='replace')[-2000:]}"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise AssertionError(f"tinyproxy did not listen on 127.0.0.1:{self.port} within 10 s")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> "Tinyproxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def requests(self) -> List[str]:
        """The request lines the proxy received (`GET http://... HTTP/1.1`, `CONNECT h:p HTTP/1.1`)."""
        out = []
        for line in self.log().splitlines():
            _, sep, rest = line.partition("]: Request (file descriptor ")
            if sep:
                out.append(rest.split("): ", 1)[1] if "): " in rest else rest)
        return out


@dataclass(frozen=True)
class TestCA:
    """A throwaway CA (`ca_cert`) and a server certificate + key for `host` (an IP address)."""

    __test__ = False  # not a pytest class

    ca_cert: Path
    server_cert: Path
    server_key: Path

    @classmethod
    def create(cls, workdir: Path, host: str = "127.0.0.2") -> "TestCA":
        d = Path(workdir)
        d.mkdir(parents=True, exist_ok=True)
        ca_key, ca_cert = d / "ca.key", d / "ca.pem"
        key, csr, cert, ext = d / "server.key", d / "server.csr", d / "server.pem", d / "server.ext"

        def openssl(*args: str) -> None:
            subprocess.run(["openssl", *args], check=True, capture_output=True)

        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca_cert),
                "-days", "2", "-subj", "/CN=fastpex test CA",
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={host}")
        ext.write_text(
            f"subjectAltName=IP:{host}\nbasicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        )
        openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key), "-CAcreateserial",
                "-out", str(cert), "-days", "2", "-extfile", str(ext))
        return cls(ca_cert=ca_cert, server_cert=cert, server_key=key)

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(self.server_cert), str(self.server_key))
        return context
