"""A real PgBouncer (Debian's ``pgbouncer`` package, which ``scripts/install_postgres.sh``
installs) in front of a test cluster, on 127.0.0.1 at a free port: the connection
pooler teams put before a shared PostgreSQL server, in the configurations they use.

- ``pool_mode``: ``session`` (a client keeps one server connection while connected)
  or ``transaction`` (each transaction may run on another one);
- ``ignore_options``: ``ignore_startup_parameters = options``, the line guides give
  for clients that send libpq's ``options``, which PgBouncer otherwise refuses with
  ``unsupported startup parameter: options`` (it cannot pass them on: PgBouncer 1.18's
  documentation of ``ignore_startup_parameters``).

Authentication is SCRAM from client to PgBouncer and PgBouncer to the server, with the
cluster's superuser and password in PgBouncer's ``auth_file``. PgBouncer refuses to
run as root, so as root it runs as the cluster's user (``postgres``).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pgcluster import PASSWORD, SUPERUSER, Cluster, ClusterUnavailable, free_port


@dataclass
class Bouncer:
    root: Path
    port: int

    def url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int((self.root / "pid").read_text()), signal.SIGTERM)
        shutil.rmtree(self.root, ignore_errors=True)


def start_bouncer(
    cluster: Cluster, database: str, pool_mode: str = "session", ignore_options: bool = False
) -> Bouncer:
    """PgBouncer for ``database`` of ``cluster``; raises ``ClusterUnavailable`` saying
    why not."""
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not os.path.exists(binary):
        raise ClusterUnavailable("no pgbouncer (run scripts/install_postgres.sh)")
    root = Path(tempfile.mkdtemp(prefix="searchengine-pgbouncer-"))
    bouncer = Bouncer(root, free_port())
    (root / "users.txt").write_text(f'"{SUPERUSER}" "{PASSWORD}"\n')
    (root / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"{database} = host=127.0.0.1 port={cluster.port} dbname={database}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {bouncer.port}\nunix_socket_dir =\n"
        f"auth_type = scram-sha-256\nauth_file = {root / 'users.txt'}\n"
        f"pool_mode = {pool_mode}\ndefault_pool_size = 4\n"
        f"logfile = {root / 'log.txt'}\npidfile = {root / 'pid'}\n"
        + ("ignore_startup_parameters = options\n" if ignore_options else "")
    )
    command = [binary, "-d", str(root / "pgbouncer.ini")]
    if os.geteuid() == 0:
        entry = pwd.getpwnam(cluster.run_as or "postgres")
        for path in (root, *root.iterdir()):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        command = ["runuser", "-u", entry.pw_name, "--", *command]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise ClusterUnavailable(f"pgbouncer did not start: {done.stderr.strip()[-600:]}")
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", bouncer.port), 0.5).close()
            return bouncer
        except OSError:
            if time.monotonic() > deadline:
                bouncer.stop()
                raise ClusterUnavailable("pgbouncer did not listen within 10 s") from None
            time.sleep(0.05)
