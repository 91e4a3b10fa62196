"""A real nginx (Debian's ``nginx`` package, which ``scripts/install_nginx.sh``
installs) in front of ``searchengine serve``, on 127.0.0.1 at a free port: the reverse
proxy people put before a web server to give it TLS, a name, or a path under a host
they already serve.

The site is given as the lines of a ``server { }`` block, as a user writes them (the
tests take them from ``docs/web.md``); everything else is nginx 1.22's defaults (its
documentation of ``ngx_http_core_module`` and ``ngx_http_proxy_module``), among them
a 1 MB ``client_max_body_size`` and ``proxy_pass`` passing ``Host: $proxy_host`` (the
upstream's address) unless told otherwise. nginx runs as one process in the
foreground (``master_process off``), so as root it needs no worker user, and its
temporary folders are its own.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from servertools import free_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


class ProxyUnavailable(RuntimeError):
    """nginx is not installed or did not start (the message says which)."""


@dataclass
class Proxy:
    root: Path
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return (self.root / "error.log").read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def start_proxy(site: str) -> Proxy:
    """nginx serving ``site`` (the inside of a ``server`` block); raises
    ``ProxyUnavailable`` saying why not."""
    if not Path(NGINX).is_file():
        raise ProxyUnavailable("no nginx (run scripts/install_nginx.sh)")
    root = Path(tempfile.mkdtemp(prefix="searchengine-nginx-"))
    port = free_port()
    temps = "\n".join(
        f"  {kind}_temp_path {root / kind};" for kind in ("client_body", "proxy", "fastcgi")
    )
    (root / "nginx.conf").write_text(
        f"daemon off;\nmaster_process off;\npid {root / 'nginx.pid'};\n"
        f"error_log {root / 'error.log'} info;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        f"  access_log {root / 'access.log'};\n{temps}\n"
        f"  uwsgi_temp_path {root / 'uwsgi'};\n  scgi_temp_path {root / 'scgi'};\n"
        f"  server {{\n    listen 127.0.0.1:{port};\n{site}\n  }}\n"
        "}\n"
    )
    command = [NGINX, "-p", str(root), "-c", str(root / "nginx.conf")]
    checked = subprocess.run([*command, "-t"], capture_output=True, text=True)
    if checked.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise AssertionError(f"nginx refused the configuration: {checked.stderr.strip()}")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proxy = Proxy(root, port, process)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return proxy
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                log = (root / "error.log").read_text(errors="replace")[-600:]
                proxy.stop()
                raise ProxyUnavailable(f"nginx did not listen within 10 s: {log}") from None
            time.sleep(0.05)
