"""Joining a Ray cluster for a run, and leaving it cleanly.

``ray_run`` embeds on whatever cluster this hands it: an address given with
``--ray-address`` (checked to answer first: Ray itself retries an unreachable one for a
minute or more), or a Ray instance of this machine's own, started for the run and
stopped after it.
"""

from __future__ import annotations

import importlib.util
import logging
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from typing import Any

from searchengine.errors import ClusterError

INSTALL_HINT = "pip install 'searchengine[ray]'"
LOCAL_ADDRESSES = (None, "", "auto", "local")


def check_engine(address: str | None) -> None:
    """Refuse at once, before any work, what would fail later: Ray missing, or an
    address that is not one.

    Raises:
        ClusterError: Ray is not installed, or ``address`` is malformed.
    """
    if importlib.util.find_spec("ray") is None:
        import_ray()
    if address not in LOCAL_ADDRESSES:
        split_address(str(address))


def import_ray() -> Any:
    """Ray, or a ``ClusterError`` that says how to install it."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ClusterError(
            f"--engine ray needs Ray, which is not installed ({exc}); install it with "
            f"{INSTALL_HINT}, or use --engine local"
        ) from None
    return ray


@contextmanager
def ray_connection(address: str | None) -> Iterator[Any]:
    """Ray, joined to the cluster at ``address`` (or a new local instance) for a run.

    A driver already connected (``ray.init`` called by the caller) is used as it is and
    left connected.

    Raises:
        ClusterError: Ray is not installed, or the cluster cannot be reached.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    # Failures reach the driver as exceptions; Ray's own notices would bury the
    # progress bar and the summary line.
    quiet: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
    if address in LOCAL_ADDRESSES:
        ray.init(address="local", include_dashboard=False, **quiet)
    else:
        assert address is not None
        check_reachable(address)
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ClusterError(f"cannot join the Ray cluster at {address}: {exc}") from None
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    # Ray prints notices such as "a worker died" on stdout, which carries the summary
    # (and --json); they belong with the progress bar, on stderr. Its listener threads
    # still print while it shuts down, so that happens inside the redirect too.
    with redirect_stdout(sys.stderr):
        try:
            yield ray
        finally:
            wait_for_data_threads()
            ray.shutdown()


# Ray Data's background threads that call into Ray until their run ends: the streaming
# executor's loop, its metadata fetcher and the iterator's fetch workers. (The block
# prefetcher parks for good and never calls Ray once the run is closed.)
_DATA_THREADS = ("StreamingExecutor-", "ray-data-metadata-prefetch", "iter_threaded")


def wait_for_data_threads(timeout: float = 30.0) -> None:
    """Let Ray Data's background threads end before the driver disconnects.

    A stopped run (Ctrl-C, an error) closes its batch iterator, but the executor waits
    only ~2 s for its loop thread; a thread still calling into Ray when
    ``ray.shutdown()`` runs makes Ray end the whole process with status 1, losing the
    clean stop.
    """
    deadline = time.monotonic() + timeout
    for thread in threading.enumerate():
        if thread is threading.current_thread() or not thread.name.startswith(_DATA_THREADS):
            continue
        thread.join(max(0.0, deadline - time.monotonic()))


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast, in one line, when nothing listens at a cluster address.

    Ray itself keeps retrying an unreachable address for a minute or more.
    """
    host, port = split_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise ClusterError(
            f"cannot reach the Ray cluster at {address} ({reason}); start it with "
            "`ray start --head` and pass the address it prints, or leave out "
            "--ray-address to run Ray on this machine"
        ) from None


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` or ``ray://host[:port]`` (Ray Client, port 10001 by default).

    Raises:
        ClusterError: anything else.
    """
    client = address.startswith("ray://")
    rest = address[len("ray://") :] if client else address
    host, sep, port = rest.rpartition(":")
    if not sep and client:
        host, port = rest, "10001"
    if not host or not port.isdigit():
        raise ClusterError(
            f"--ray-address {address!r}: use HOST:PORT (the head's GCS address) or "
            "ray://HOST[:PORT] (Ray Client)"
        )
    return host.strip("[]"), int(port)
