"""An unreachable model hub, for real: a server on 127.0.0.1 that accepts connections and
never answers.

This is what a machine behind a broken proxy or a captive portal sees: connecting works,
then nothing comes back, so every request of the hub client waits for its time-out. Point
a server at it with ``HF_ENDPOINT`` (and ``HF_HUB_OFFLINE`` unset) and make sure the model
asked for is not cached (an empty ``HF_HOME``).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from fakehub import offline_env


@contextmanager
def hanging_hub() -> Iterator[str]:
    """Yield the base URL of a server that accepts every connection and never answers.

    Connections are held open (unread) until the block ends, so a client waits for its
    own time-out, not for a reset.
    """
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    listener.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(connection)

    thread = threading.Thread(target=accept, name="hanging hub", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()
        for connection in held:
            connection.close()


def unreachable_hub_env(base: Mapping[str, str], endpoint: str, hf_home: Path) -> dict[str, str]:
    """``base`` pointed at ``endpoint`` as the hub, online, with the cache ``hf_home``."""
    env = {k: v for k, v in base.items() if k not in ("HF_HUB_ETAG_TIMEOUT", "HF_HUB_OFFLINE")}
    cache = {k: v for k, v in offline_env(hf_home).items() if not k.endswith("_OFFLINE")}
    env.pop("TRANSFORMERS_OFFLINE", None)
    return {**env, **cache, "HF_ENDPOINT": endpoint}
