"""A Ray cluster of one node for tests and benchmarks: a real ``ray start --head``.

The head is what a team's cluster runs (``docs/scale.md``), so ``searchengine index
--engine ray --ray-address HOST:PORT`` joins it exactly as it would join a cluster.
It is small (2 CPUs, a 200 MB object store, no dashboard) and lives in its own short
temporary folder (Ray's socket paths must stay under 107 characters).

With ``unprivileged`` (the tests) under root, the head runs without the capabilities
that let root read any file (util-linux ``setpriv``, as ``tests/e2e/test_hostile.py``
does): its workers then cannot read a file of mode 000 that the driver, still root,
plans, which is how a worker that does not see a path behaves.

Ray's token authentication is off for this loopback-only cluster
(``RAY_AUTH_MODE=disabled``, for the head and the drivers alike).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
_DROP = "-dac_override,-dac_read_search"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RayHead:
    """``ray start --head --block`` in its own process group; ``stop()`` ends all of it."""

    def __init__(
        self, cpus: int = 2, object_store_mb: int = 200, unprivileged: bool = True
    ) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log = self.folder / "head.log"
        ray = Path(sys.executable).with_name("ray")
        command = [
            str(ray), "start", "--head", "--block", "--port", str(self.port),
            "--num-cpus", str(cpus), "--num-gpus", "0",
            "--object-store-memory", str(object_store_mb * 1024 * 1024),
            "--temp-dir", str(self.folder / "t"), "--include-dashboard", "false",
            "--disable-usage-stats",
        ]  # fmt: skip
        if unprivileged and os.geteuid() == 0:
            setpriv = shutil.which("setpriv")
            assert setpriv, "running as root needs util-linux setpriv to drop DAC override"
            command = [setpriv, f"--bounding-set={_DROP}", f"--inh-caps={_DROP}", "--", *command]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                command,
                env={**os.environ, **RAY_ENV},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_started()

    def _wait_started(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if b"Ray runtime started" in self.log.read_bytes():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"ray start failed:\n{self.log.read_text(errors='replace')[-3000:]}")

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """An environment for a driver of this cluster (a ``searchengine index`` child)."""
        return {**(os.environ if base is None else base), **RAY_ENV}

    def actor_pids(self, class_part: str = "Embedder") -> list[int]:
        """Pids of the live actors whose class name contains ``class_part``.

        Asked of the cluster's control store through Ray's Python API, from a short-lived
        driver (``ray.util.state`` needs the dashboard, which this head does not run).
        """
        script = (
            "import json, sys, ray\n"
            "ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False)\n"
            "actors = ray._private.state.actors().values()\n"
            "print(json.dumps([a['Pid'] for a in actors\n"
            "    if a['State'] == 'ALIVE' and sys.argv[2] in a['ActorClassName']]))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", script, self.address, class_part],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return [int(pid) for pid in json.loads(out.stdout.strip().splitlines()[-1])]

    def stop(self) -> None:
        """SIGTERM to the head's process group, then SIGKILL to whatever is left of it.

        ``ray start --block`` stops its children on SIGTERM, but its GCS server and log
        monitor outlive it by about 30 s; nothing of this throwaway cluster needs a
        graceful end (its folder is removed below), so they get 3 s.
        """
        for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _group_alive(self.proc.pid):
                self.proc.poll()
                time.sleep(0.2)
        self.proc.poll()
        shutil.rmtree(self.folder, ignore_errors=True)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def processes_with_env(marker: str) -> list[int]:
    """Pids of live processes whose environment holds ``marker`` (``NAME=value``)."""
    found = []
    needle = marker.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found
