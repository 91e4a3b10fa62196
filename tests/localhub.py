"""A tiny Hugging Face hub on 127.0.0.1: the real hub client downloads from it.

``tests/fakehub.py`` builds repos (:class:`fakehub.RepoSpec`); this module serves them over
the part of the hub's HTTP API that ``huggingface_hub`` uses to download, so a cache can be
filled exactly as a user fills one, by the installed client itself:

- ``hf download REPO`` / ``snapshot_download``: repo info, the file tree, every file;
- a first online load: one ``HEAD`` + ``GET`` per file the loader asks for, and a 404 with
  the commit id for every file it asks for that the repo does not have (the client records
  those under ``.no_exist/``, which later offline loads rely on).

Point a client at it with ``HF_ENDPOINT`` (``LocalHub.env()``) or ``endpoint=``. Nothing
here reaches beyond 127.0.0.1.

The endpoints and headers follow ``huggingface_hub`` itself (``file_download.get_hf_file_metadata``
reads ``X-Repo-Commit``, ``X-Linked-Etag``/``ETag`` and ``X-Linked-Size``/``Content-Length``;
``utils._http.hf_raise_for_status`` maps ``X-Error-Code`` to its exceptions;
``HfApi.repo_info`` and ``HfApi.list_repo_tree`` read ``/api/models/...``). LFS files answer
with the sha256 as their linked etag and plain git files with their git blob sha1, as the
hub does, so the client names the cached blobs as it would after a real download.

``before_request`` lets a test slow the hub down or make it hang (a hub that accepts the
connection and never answers), see :class:`LocalHub`.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from fakehub import RepoSpec

__all__ = ["LocalHub", "Request", "serve"]

# Files the hub stores in git LFS (the default .gitattributes of a new model repo).
LFS_SUFFIXES = (".bin", ".safetensors", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".ot")


def git_blob_sha1(data: bytes) -> str:
    """The id git gives a file's content (what the hub reports as a plain file's etag)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs(name: str) -> bool:
    return name.endswith(LFS_SUFFIXES)


def etag(name: str, data: bytes) -> str:
    """The etag the hub client names a cached blob after: sha256 for LFS files, else git sha1."""
    return hashlib.sha256(data).hexdigest() if is_lfs(name) else git_blob_sha1(data)


def commit_id(spec: RepoSpec) -> str:
    """A stable 40-hex commit id for a repo's content: same files, same commit."""
    manifest = "\n".join(f"{name} {etag(name, data)}" for name, data in sorted(spec.files.items()))
    return hashlib.sha1(spec.repo_id.encode() + b"\n" + manifest.encode()).hexdigest()


@dataclass(frozen=True)
class Request:
    """One request the hub received (for assertions and for ``before_request`` hooks)."""

    method: str
    path: str


class LocalHub:
    """A hub serving ``repos`` on 127.0.0.1 while the context is open.

    Args:
        repos: the repos to serve, each under its ``repo_id``.
        before_request: called with each :class:`Request` before it is answered, on the
            server's thread for that connection. Sleep in it to make the hub slow; block in it
            (e.g. on a ``threading.Event``) to make it hang. Exceptions it raises close the
            connection without an answer.

    Attributes:
        endpoint: ``http://127.0.0.1:PORT`` once started.
        requests: every request received, in order.
    """

    def __init__(
        self,
        repos: Iterable[RepoSpec],
        *,
        before_request: Callable[[Request], None] | None = None,
    ) -> None:
        self.repos: dict[str, RepoSpec] = {spec.repo_id: spec for spec in repos}
        self.commits = {repo_id: commit_id(spec) for repo_id, spec in self.repos.items()}
        self.before_request = before_request
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.endpoint = ""

    def env(self) -> dict[str, str]:
        """Environment that sends a hub client here (online: ``HF_HUB_OFFLINE`` cleared)."""
        return {"HF_ENDPOINT": self.endpoint, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0"}

    def __enter__(self) -> LocalHub:
        hub = self

        class Handler(_Handler):
            owner = hub

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        # A short poll interval: shutdown() waits for the loop's next poll.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)


@contextmanager
def serve(repos: Iterable[RepoSpec]) -> Iterator[LocalHub]:
    """``with serve(repos) as hub:`` a running :class:`LocalHub`."""
    with LocalHub(repos) as hub:
        yield hub


def _in_folder(
    entries: list[dict[str, object]], folder: str, recursive: bool
) -> list[dict[str, object]]:
    """The tree entries under ``folder`` ("" for the root): direct children unless recursive."""
    prefix = f"{folder}/" if folder else ""
    out = []
    for entry in entries:
        path = str(entry["path"])
        if path.startswith(prefix) and (recursive or "/" not in path[len(prefix) :]):
            out.append(entry)
    return out


class _Server(ThreadingHTTPServer):
    """A client that leaves mid-download (a test that stops or times out a load) is
    what these tests do on purpose: not an error to print."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    owner: LocalHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: test output is for the tests

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        hub = self.owner
        request = Request(self.command, self.path)
        hub._record(request)
        if hub.before_request is not None:
            try:
                hub.before_request(request)
            except Exception:
                self.close_connection = True
                return
        path = unquote(urlsplit(self.path).path)
        if path.startswith("/api/models/"):
            self._api(path[len("/api/models/") :], body)
            return
        parts = path.strip("/").split("/")
        n = self._id_parts(parts)
        if len(parts) >= n + 3 and parts[n] == "resolve":
            repo_id, revision, filename = (
                "/".join(parts[:n]),
                parts[n + 1],
                "/".join(parts[n + 2 :]),
            )
            self._resolve(repo_id, revision, filename, body)
            return
        self._send(404, b'{"error": "not served by the local hub"}', {}, body)

    # ------------------------------------------------------------------ endpoints

    def _id_parts(self, parts: list[str]) -> int:
        """How many leading path parts name the repo: ``ORG/NAME``, or ``NAME`` for the
        hub's oldest repos (``bert-base-uncased``)."""
        repos = self.owner.repos
        if "/".join(parts[:2]) not in repos and parts and parts[0] in repos:
            return 1
        return 2

    def _repo(self, repo_id: str, revision: str, body: bool) -> RepoSpec | None:
        hub = self.owner
        spec = hub.repos.get(repo_id)
        if spec is None:
            # The hub answers 401 for repos that do not exist (or are private).
            self._error(401, "RepoNotFound", "Repository not found", {}, body)
            return None
        if revision not in ("main", hub.commits[repo_id]):
            self._error(404, "RevisionNotFound", "Invalid rev id", {}, body)
            return None
        return spec

    def _resolve(self, repo_id: str, revision: str, filename: str, body: bool) -> None:
        spec = self._repo(repo_id, revision, body)
        if spec is None:
            return
        commit = self.owner.commits[repo_id]
        data = spec.files.get(filename)
        if data is None:
            self._error(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": commit}, body)
            return
        headers = {"X-Repo-Commit": commit, "ETag": f'"{git_blob_sha1(data)}"'}
        if is_lfs(filename):
            headers["X-Linked-Etag"] = f'"{hashlib.sha256(data).hexdigest()}"'
            headers["X-Linked-Size"] = str(len(data))
        self._send(200, data, headers, body, content_type="application/octet-stream")

    def _api(self, rest: str, body: bool) -> None:
        parts = rest.strip("/").split("/")
        n = self._id_parts(parts)
        repo_id, tail = "/".join(parts[:n]), parts[n:]
        if not tail or (len(tail) == 2 and tail[0] == "revision"):
            revision = tail[1] if tail else "main"
            spec = self._repo(repo_id, revision, body)
            if spec is not None:
                self._json(self._info(spec), body)
            return
        if len(tail) >= 2 and tail[0] == "tree":
            spec = self._repo(repo_id, tail[1], body)
            if spec is None:
                return
            folder = "/".join(tail[2:])
            recursive = "recursive=true" in urlsplit(self.path).query.lower()
            entries = _in_folder(self._tree(spec), folder, recursive)
            if folder and not entries:
                headers = {"X-Repo-Commit": self.owner.commits[repo_id]}
                self._error(404, "EntryNotFound", f"{folder} does not exist", headers, body)
                return
            self._json(entries, body)
            return
        self._send(404, b'{"error": "not served by the local hub"}', {}, body)

    def _info(self, spec: RepoSpec) -> dict[str, object]:
        return {
            "_id": spec.repo_id,
            "id": spec.repo_id,
            "modelId": spec.repo_id,
            "sha": self.owner.commits[spec.repo_id],
            "private": False,
            "disabled": False,
            "gated": False,
            "tags": [],
            "siblings": [{"rfilename": name} for name in sorted(spec.files)],
        }

    def _tree(self, spec: RepoSpec) -> list[dict[str, object]]:
        entries: list[dict[str, object]] = []
        folders: set[str] = set()
        for name, data in sorted(spec.files.items()):
            parent = name.rpartition("/")[0]
            while parent and parent not in folders:
                folders.add(parent)
                entries.append({"type": "directory", "oid": "0" * 40, "size": 0, "path": parent})
                parent = parent.rpartition("/")[0]
            entry: dict[str, object] = {
                "type": "file",
                "oid": git_blob_sha1(data),
                "size": len(data),
                "path": name,
            }
            if is_lfs(name):
                sha = hashlib.sha256(data).hexdigest()
                entry["lfs"] = {"oid": sha, "size": len(data), "pointerSize": 134}
            entries.append(entry)
        return entries

    # --------------------------------------------------------------------- output

    def _json(self, obj: object, body: bool) -> None:
        self._send(200, json.dumps(obj).encode(), {}, body)

    def _error(
        self, status: int, code: str, message: str, headers: Mapping[str, str], body: bool
    ) -> None:
        payload = json.dumps({"error": message}).encode()
        self._send(
            status, payload, {**headers, "X-Error-Code": code, "X-Error-Message": message}, body
        )

    def _send(
        self,
        status: int,
        data: bytes,
        headers: Mapping[str, str],
        body: bool,
        content_type: str = "application/json",
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(data)
