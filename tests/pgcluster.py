"""A throwaway PostgreSQL cluster for the tests, started once per session.

``initdb`` in a temporary folder, the server on 127.0.0.1 at a free port (and its
socket in that folder), password authentication (so a wrong password is a real
refusal), durability off where the tests kill clients, never the server (a
``durable`` cluster, for the tests that stop the server itself, keeps PostgreSQL's
own settings). PostgreSQL
refuses to run as root: as root the cluster runs as the ``postgres`` user that
Debian's package creates, through ``runuser``.

The server binaries come from Debian's ``postgresql`` package
(``/usr/lib/postgresql/<version>/bin``, which ``scripts/install_postgres.sh`` installs)
or from ``pg_ctl`` on the PATH.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

SUPERUSER = "setest"
PASSWORD = "setest-secret"


class ClusterUnavailable(Exception):
    """PostgreSQL cannot be started here; the message says why."""


def find_bindir() -> Path | None:
    """The newest PostgreSQL server binaries on this machine, if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2] or 0))
    candidates = [Path(p) for p in reversed(found)]
    if pg_ctl := shutil.which("pg_ctl"):
        candidates.append(Path(os.path.realpath(pg_ctl)).parent)
    for folder in candidates:
        if all((folder / tool).exists() for tool in ("initdb", "pg_ctl", "postgres")):
            return folder
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Cluster:
    bindir: Path
    root: Path
    port: int
    run_as: str | None  # the OS user running the server, when we are root
    durable: bool = False  # PostgreSQL's own fsync and synchronous_commit
    settings: str = ""  # more server settings, as ``-c name=value`` options
    _databases: itertools.count = field(default_factory=lambda: itertools.count(1))
    _free: list[str] = field(default_factory=list)

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(
        self, database: str = "postgres", user: str = SUPERUSER, password: str = PASSWORD
    ) -> str:
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{database}"

    def admin(self, *statements: str, database: str = "postgres") -> None:
        """Run statements as the superuser, each in its own autocommit step."""
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            for sql in statements:
                conn.execute(sql)  # type: ignore[arg-type]

    def viewer(self, url: str, *grants: str, schema: str = "se_team") -> str:
        """A new login role that may read the collection ``schema`` in ``url``'s database
        (``CONNECT``, ``USAGE``, ``SELECT`` on its tables, as ``docs/scale.md`` tells an
        administrator), then ``grants`` (more statements, ``{role}`` standing for it);
        returns the role's URL."""
        database, role = url.rsplit("/", 1)[1], f"viewer_{uuid.uuid4().hex[:8]}"
        self.admin(f"CREATE ROLE {role} LOGIN PASSWORD 'look'")
        self.admin(
            f"GRANT CONNECT ON DATABASE {database} TO {role}",
            f"GRANT USAGE ON SCHEMA {schema} TO {role}",
            f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role}",
            *(grant.format(role=role) for grant in grants),
            database=database,
        )
        return self.url(database, user=role, password="look")

    def new_database(self) -> str:
        """A fresh, empty database (or an emptied one given back); returns its URL.

        A new database copies ~1,000 files of its template; a suite making one per
        test spent a minute deleting them at the end. Emptied ones are reused.
        """
        if self._free:
            return self._free.pop()
        name = f"t{os.getpid()}_{next(self._databases)}"
        self.admin(f"CREATE DATABASE {name} STRATEGY = FILE_COPY")
        return self.url(name)

    def give_back(self, url: str) -> None:
        """Empty a database of every collection schema, for the next test to use."""
        import psycopg

        name = url.rsplit("/", 1)[1]
        try:
            with psycopg.connect(self.url(name), autocommit=True) as conn:
                conn.execute("SET lock_timeout = '5s'")
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    [name],
                )
                rows = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'se%%'")
                for (schema,) in rows.fetchall():
                    conn.execute(f'DROP SCHEMA "{schema}" CASCADE')  # type: ignore[arg-type]
        except psycopg.Error:
            return  # not reusable: left as it is
        self._free.append(url)

    def _cmd(self, *args: str) -> list[str]:
        tool = [str(self.bindir / args[0]), *args[1:]]
        return ["runuser", "-u", self.run_as, "--", *tool] if self.run_as else tool

    def start(self) -> None:
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.root} -c max_connections=200"
        if not self.durable:
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        if self.settings:
            opts += f" {self.settings}"
        log = self.root / "server.log"
        done = subprocess.run(
            self._cmd(
                "pg_ctl",
                "-D",
                str(self.data),
                "-l",
                str(log),
                "-w",
                "-t",
                "60",
                "-o",
                opts,
                "start",
            ),
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            tail = log.read_text()[-600:] if log.exists() else done.stderr[-600:]
            raise ClusterUnavailable(f"pg_ctl start failed: {tail.strip()}")

    def halt(self) -> None:
        """Stop the server at once, as a crash would: its processes quit without a
        checkpoint, clients lose their connections mid-statement; ``start`` recovers."""
        subprocess.run(
            self._cmd("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop"),
            capture_output=True,
        )

    @contextmanager
    def frozen(self) -> Iterator[None]:
        """The server's processes stopped (SIGSTOP) while the block runs: a server
        whose disk hung, or a paused process. Its kernel still accepts connections,
        acknowledges what clients send and answers keepalives; nothing replies."""
        import signal

        pids = self._processes()
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)

    def _processes(self) -> list[int]:
        """The postmaster and every process it started (backends, checkpointer…)."""
        top = int((self.data / "postmaster.pid").read_text().split()[0])
        found = [top]
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:  # the parent is the field after the name, which may hold spaces
                parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
            if parent == top:
                found.append(int(proc.name))
        return found

    def standby(self) -> Cluster:
        """A hot standby of this cluster (``pg_basebackup -R``: a copy that streams the
        primary's log and replays it), started on a port of its own: where a team
        points its search-only hosts. Stop it with ``stop``."""
        root = Path(tempfile.mkdtemp(prefix="searchengine-pg-standby-"))
        if self.run_as:
            entry = pwd.getpwnam(self.run_as)
            os.chown(root, entry.pw_uid, entry.pw_gid)
        replica = Cluster(self.bindir, root, free_port(), self.run_as, self.durable, self.settings)
        copy = [
            *(["runuser", "-u", self.run_as, "--"] if self.run_as else []),
            *["env", f"PGPASSWORD={PASSWORD}", str(self.bindir / "pg_basebackup")],
            *["-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, "-D", str(replica.data)],
            *["-R", "-X", "stream", "--no-sync"],
        ]
        done = subprocess.run(copy, capture_output=True, text=True)
        if done.returncode != 0:
            shutil.rmtree(root, ignore_errors=True)
            raise ClusterUnavailable(f"pg_basebackup failed: {done.stderr.strip()[-600:]}")
        replica.start()
        return replica

    def promote(self) -> None:
        """Make this standby a primary (a failover): it stops following and takes writes."""
        done = subprocess.run(
            self._cmd("pg_ctl", "-D", str(self.data), "-w", "promote"),
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise ClusterUnavailable(f"pg_ctl promote failed: {done.stderr.strip()[-600:]}")

    def caught_up(self, standby: Cluster, timeout: float = 30) -> None:
        """Wait until ``standby`` has replayed everything this primary has written."""
        import time

        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            # Inserted, not only written: without synchronous_commit, commits wait for the
            # WAL writer (200 ms) before they are written, and streamed.
            (lsn,) = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()  # type: ignore[misc]
        deadline = time.monotonic() + timeout
        with psycopg.connect(standby.url(), autocommit=True) as conn:
            while True:
                row = conn.execute("SELECT pg_last_wal_replay_lsn() >= %s", [lsn]).fetchone()
                if row and row[0]:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the standby did not replay up to {lsn} in {timeout} s")
                time.sleep(0.05)

    def stop(self) -> None:
        self.halt()
        shutil.rmtree(self.root, ignore_errors=True)


def start_cluster(
    durable: bool = False, wal_dir: Path | None = None, settings: str = ""
) -> Cluster:
    """initdb and start a cluster (``durable``: with PostgreSQL's own fsync and
    synchronous_commit; ``wal_dir``: its write-ahead log there, an empty folder the
    server's user owns, in 1 MB segments; ``settings``: ``-c name=value`` options);
    raises ``ClusterUnavailable`` saying why not."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise ClusterUnavailable(
            "psycopg is not installed (pip install 'searchengine[postgres]')"
        ) from None
    bindir = find_bindir()
    if bindir is None:
        raise ClusterUnavailable("no PostgreSQL server binaries (run scripts/install_postgres.sh)")
    run_as = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise ClusterUnavailable("running as root and there is no postgres user") from None
        if shutil.which("runuser") is None:
            raise ClusterUnavailable("running as root and runuser is missing")
        run_as = "postgres"
    root = Path(tempfile.mkdtemp(prefix="searchengine-pg-"))
    if run_as:
        entry = pwd.getpwnam(run_as)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    cluster = Cluster(bindir, root, free_port(), run_as, durable, settings)
    pwfile = root / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if run_as:
        os.chown(pwfile, pwd.getpwnam(run_as).pw_uid, -1)
    done = subprocess.run(
        cluster._cmd(
            "initdb",
            "-D",
            str(cluster.data),
            "-U",
            SUPERUSER,
            f"--pwfile={pwfile}",
            "-A",
            "scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            *([f"--waldir={wal_dir}", "--wal-segsize=1"] if wal_dir else []),
        ),
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise ClusterUnavailable(f"initdb failed: {done.stderr.strip()[-600:]}")
    try:
        cluster.start()
    except ClusterUnavailable:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return cluster


@contextmanager
def database(url: str | None = None) -> Iterator[str]:
    """``url``, or (None) a new database in a throwaway cluster stopped at the end:
    what a benchmark's ``--database-url`` option falls back to."""
    if url is not None:
        yield url
        return
    cluster = start_cluster()
    try:
        yield cluster.new_database()
    finally:
        cluster.stop()
