"""What an ONNX export was made from, and whether all of it is still as it was.

An export is valid only for the exact inputs that made it: the weights and config it
loaded, every tokenizer file it read (the tokenizer may live in another repo, e.g.
``bert-base-uncased`` for CLIPS) and the packages that wrote and verified it. Each file is
remembered by a key that a search can re-check in microseconds, without importing torch:

- a file in the Hugging Face cache is a link to a blob named by its content (the hub's
  etag: sha256 for LFS files, the git blob id for the others): the key is that name, and
  the file is found again through the repo's ``refs/main``, in whatever cache is in use
  now (a cache copied to another machine keeps its exports);
- another file up to ``HASHED_BYTES`` (configs, tokenizers in a model folder): its sha256;
- anything else (a weights file in a folder): size and modification time.

This module is torch-free.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

HASHED_BYTES = 4 << 20
# The packages that produce an export: a different version of any of them may export or
# tokenize differently, so the export is made again. (ONNX Runtime only runs it.)
WRITERS = ("torch", "open_clip_torch", "transformers", "tokenizers", "onnx", "onnxscript")


def writer_versions() -> dict[str, str]:
    """Versions of the packages an export depends on, and searchengine's.

    Read from the ``NAME-VERSION.dist-info`` folder names on ``sys.path`` in one pass
    (under 1 ms; ``importlib.metadata.version`` per package costs 8-20 ms, which a cold
    search pays), falling back to ``importlib.metadata`` for anything not found that way.
    """
    wanted = (*WRITERS, "searchengine")
    found: dict[str, str] = {}
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if name.endswith(".dist-info"):
                project, _, version = name[: -len(".dist-info")].partition("-")
                key = project.lower().replace("-", "_").replace(".", "_")
                if key in wanted and key not in found:
                    found[key] = version
    out = {}
    for name in wanted:
        if name in found:
            out[name] = found[name]
            continue
        from importlib import metadata  # ~17 ms to import: only when needed

        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "-"
    return out


def _hub_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def record(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Keys for ``paths`` (files an export read), deduplicated, in a stable order."""
    cache = _hub_cache()
    entries: dict[str, dict[str, Any]] = {}
    for path in paths:
        entry = _where(Path(path), cache)
        entry.update(_key(_locate(entry, cache)))
        entries[f"{entry.get('hub', '')}|{entry.get('file', entry.get('path'))}"] = entry
    return [entries[k] for k in sorted(entries)]


def unchanged(sources: Sequence[dict[str, Any]]) -> bool:
    """Whether every file recorded by :func:`record` still has the key it had."""
    cache = _hub_cache()
    for source in sources:
        try:
            path = _locate(source, cache)
            now = _key(path)
        except OSError:
            return False
        if any(now.get(k) != v for k, v in source.items() if k not in ("hub", "file", "path")):
            return False
    return True


def _where(path: Path, cache: Path) -> dict[str, Any]:
    """``{"hub": "models--ORG--NAME", "file": "name"}`` for a cached hub file, else its path."""
    absolute = Path(os.path.abspath(path))  # not resolved: that would leave for the blob
    parts: tuple[str, ...] = ()
    for root in (cache, cache.resolve()):
        try:
            parts = absolute.relative_to(os.path.abspath(root)).parts
            break
        except ValueError:
            continue
    if len(parts) >= 4 and parts[1] == "snapshots":
        return {"hub": parts[0], "file": "/".join(parts[3:])}
    return {"path": str(absolute)}


def _locate(entry: dict[str, Any], cache: Path) -> Path:
    """Where a recorded file is now: through ``refs/main`` for hub files."""
    if "hub" not in entry:
        return Path(entry["path"])
    repo = cache / entry["hub"]
    commit = (repo / "refs" / "main").read_text().strip()
    return repo / "snapshots" / commit / entry["file"]


def _key(path: Path) -> dict[str, Any]:
    stat = path.stat()  # follows the link: the blob's size
    if path.is_symlink():
        target = Path(os.readlink(path))
        if target.parent.name == "blobs":
            return {"size": stat.st_size, "blob": target.name}
    if stat.st_size <= HASHED_BYTES:
        return {"size": stat.st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def repo_files(folder: Path) -> list[Path]:
    """Every file of a repo snapshot or model folder (the export keys them all)."""
    return sorted(p for p in folder.rglob("*") if not p.is_dir())


def hub_snapshot(repo_id: str) -> Path | None:
    """The cached snapshot ``refs/main`` of ``repo_id`` points at, if any."""
    repo = _hub_cache() / ("models--" + repo_id.replace("/", "--"))
    try:
        commit = (repo / "refs" / "main").read_text().strip()
    except OSError:
        return None
    snapshot = repo / "snapshots" / commit
    return snapshot if snapshot.is_dir() else None
