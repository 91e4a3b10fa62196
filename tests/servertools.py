"""Helpers for the web server's tests: a toy collection, a free port, a live server
(``searchengine serve`` in a child process, or an app under uvicorn in a thread, with
the settings ``serve`` uses).

The toy collection is the held-out toy world (60 images, seed 4242) indexed with the
shipped ``toy`` model when the package has it, else with the fake hub's CLIPS model
(random weights: rankings are then only checked against the CLI's).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner
from fakehub import CLIPS_REPO_ID
from imagegen import solid
from PIL import Image

from searchengine.cli import main
from searchengine.collection import Collection
from searchengine.config import Config
from searchengine.models.fake import FakeEncoder
from searchengine.models.spec import shipped_model_dir
from searchengine.toy import world as toyworld

TOY_SEED = 4242
TOY_IMAGES = 60
COLLECTION = "web"
# Written to a file outside the test collection: no response may ever contain it.
SECRET = "TOP-SECRET-" + secrets.token_hex(8)


def toy_model_available() -> bool:
    """Whether the package ships the trained ``toy`` model (another task makes it)."""
    return (shipped_model_dir("toy") / "open_clip_config.json").is_file()


@dataclass(frozen=True)
class ToyCollection:
    """A collection built through the CLI, and what its images show."""

    index_dir: Path
    photos: Path
    model: str
    shows: Mapping[str, str]  # absolute path -> the generator's caption

    @property
    def semantic(self) -> bool:
        """Whether rankings mean something (the trained toy model) or not (random weights)."""
        return self.model == "toy"

    def cli(self, *args: str) -> str:
        """Run ``searchengine ARGS`` on this collection in-process; its stdout."""
        result = CliRunner().invoke(
            main,
            [*args, "--index-dir", str(self.index_dir), "--collection", COLLECTION],
            catch_exceptions=False,
        )
        assert result.exit_code == 0, result.output
        return result.stdout

    def cli_json(self, *args: str) -> list[dict]:
        return json.loads(self.cli(*args, "--json"))


def build_toy_collection(root: Path) -> ToyCollection:
    """Generate the toy photos under ``root`` and index them with the CLI.

    The fake hub must be this process's hub cache already when ``toy`` is missing.
    """
    photos = root / "photos"
    items = toyworld.generate(photos, TOY_IMAGES, TOY_SEED)
    model = "toy" if toy_model_available() else f"hf-hub:{CLIPS_REPO_ID}"
    collection = ToyCollection(
        root / "indexes",
        photos,
        model,
        {os.path.abspath(photos / i.path): i.captions[0] for i in items},
    )
    collection.cli("index", str(photos), "--model", model, "--device", "cpu")
    return collection


class FakeCaptioner:
    """Captions an image by its size; counts calls."""

    model = "fake-captioner"
    device = "cpu"

    def __init__(self) -> None:
        self.calls = 0

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        self.calls += len(images)
        return [f"a {im.width} by {im.height} picture" for im in images]

    def close(self) -> None:
        pass


def make_collection(tmp_path: Path) -> tuple[Collection, Path, Path]:
    """A small collection embedded with the fake (colour) encoder: no torch, fast.

    ``photos/``: red, green, blue JPEGs, ``sub/yellow.png``, a broken JPEG, and
    ``link.jpg``, a symbolic link to ``outside/cyan.jpg``; ``outside/`` also holds
    ``secret.txt`` (``SECRET``). Returns the open collection, ``photos``, ``outside``.
    """
    photos, outside = tmp_path / "photos", tmp_path / "outside"
    for name, colour in [("red", (220, 20, 20)), ("green", (20, 200, 20)), ("blue", (20, 20, 220))]:
        solid(photos / f"{name}.jpg", colour)
    solid(photos / "sub" / "yellow.png", (230, 230, 20), (40, 80))
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    solid(outside / "cyan.jpg", (20, 220, 220))
    (outside / "secret.txt").write_text(SECRET)
    # Indexed as a file: the ingest follows file links (the user put it there).
    os.symlink(outside / "cyan.jpg", photos / "link.jpg")
    config = Config(home=tmp_path / "indexes", device="cpu", workers=1)
    collection = Collection.open("t", config, create=True, encoder=FakeEncoder())
    collection.index([photos])
    return collection, photos, outside


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def live_server(collection: ToyCollection, env: Mapping[str, str], *extra: str) -> Iterator[str]:
    """``searchengine serve`` in a child process; yields its base URL once it answers."""
    with server_process(collection, env, *extra) as (url, _child):
        yield url


@contextmanager
def server_process(
    collection: ToyCollection, env: Mapping[str, str], *extra: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``searchengine serve`` in a child process; yields its base URL once it answers,
    and the process (its pid, for RSS and signals)."""
    where = ["--index-dir", str(collection.index_dir), "--collection", COLLECTION]
    with serve_command(collection.index_dir.parent, env, *where, *extra) as running:
        yield running


@contextmanager
def serve_command(
    logs: Path, env: Mapping[str, str], *args: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``searchengine serve ARGS`` on a free port (its output in ``logs``); yields its
    base URL once it answers, and the process."""
    port = free_port()
    command = [
        sys.executable,
        "-c",
        "from searchengine.cli import main; main()",
        "serve",
        "--port",
        str(port),
        "--device",
        "cpu",
        *args,
    ]
    log = logs / f"serve-{port}.log"
    with open(log, "w") as output:
        child = subprocess.Popen(command, env=dict(env), stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, child, log)
        yield url, child
    finally:
        child.terminate()
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _wait_until_up(
    url: str, child: subprocess.Popen[bytes], log: Path, timeout: float = 120.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            output = log.read_text(errors="replace")
            raise AssertionError(f"searchengine serve exited with {child.returncode}:\n{output}")
        try:
            with urllib.request.urlopen(f"{url}/api/health", timeout=2):
                return
        except urllib.error.HTTPError:  # it answers (401 when it has a token)
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    raise AssertionError(f"searchengine serve did not answer at {url} in {timeout:.0f} s")


@contextmanager
def serving(app: object) -> Iterator[str]:
    """Run an ASGI app under uvicorn in a thread on a free port; yields its base URL."""
    import threading

    import uvicorn

    from searchengine.server.http import uvicorn_config

    port = free_port()
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise AssertionError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
