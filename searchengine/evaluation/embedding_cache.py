"""The embeddings ``searchengine bench`` keeps, per (dataset, model).

A second run of the same table only computes metrics. The cache lives in
``$SEARCHENGINE_CACHE_DIR`` when set, else ``$XDG_CACHE_HOME/searchengine/bench``
(``~/.cache/searchengine/bench``); one ``.npz`` file per pair, named
``<dataset>-<key>.npz``. The key hashes

- the dataset fingerprint: image paths, sizes and mtimes, captions and their pairing;
- the model identity: the canonical spec string, plus name, size and mtime of the
  weight files when the spec points at files on disk (``toy``, ``local-dir:``,
  checkpoints), so retrained local weights are never served stale. Hub models are
  keyed by spec only: after a hub repo changes, run with ``--no-cache``.

Each file also stores that identity and is refused on any mismatch.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from searchengine.evaluation.datasets import RetrievalDataset
from searchengine.fsutil import atomic_write
from searchengine.models import parse_model_spec
from searchengine.models.spec import ModelKind

__all__ = ["CACHE_FORMAT", "EmbeddingCache", "model_identity"]

CACHE_FORMAT = 1


def model_identity(spec: str) -> str:
    """The canonical spec, plus a stat summary of its weight files when they are local."""
    parsed = parse_model_spec(spec)
    local = None
    if parsed.kind in (ModelKind.OPEN_CLIP_DIR, ModelKind.TRANSFORMERS) or (
        parsed.kind is ModelKind.OPEN_CLIP and os.path.isabs(parsed.source)
    ):
        local = Path(parsed.source)
    if local is None or not local.exists():
        return parsed.spec
    files = sorted(p for p in local.rglob("*") if p.is_file()) if local.is_dir() else [local]
    stats = [(str(p.relative_to(local)) if local.is_dir() else p.name, p.stat()) for p in files]
    summary = ";".join(f"{name}:{s.st_size}:{s.st_mtime_ns}" for name, s in stats)
    return f"{parsed.spec}|{hashlib.sha256(summary.encode()).hexdigest()[:16]}"


class EmbeddingCache:
    """Image and caption embeddings of one dataset under one model, one file each.

    Args:
        folder: where the files live; ``None`` disables caching.
    """

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder

    def path(self, dataset: RetrievalDataset, identity: str) -> Path:
        """The file for (dataset, model identity)."""
        assert self.folder is not None
        key = hashlib.sha256(f"{dataset.fingerprint()}\n{identity}".encode()).hexdigest()[:20]
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", dataset.name)[:60]
        return self.folder / f"{name}-{key}.npz"

    def load(
        self, dataset: RetrievalDataset, identity: str
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Cached ``(images, texts)`` embeddings, or ``None`` on a miss or any mismatch."""
        if self.folder is None:
            return None
        path = self.path(dataset, identity)
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                images, texts = data["images"], data["texts"]
        except (OSError, KeyError, ValueError):
            return None  # missing, partial or foreign file: recompute
        expected = self._meta(dataset, identity)
        if meta != expected or images.shape[0] != len(dataset.images):
            return None
        if texts.shape[0] != len(dataset.captions):
            return None
        return images, texts

    def store(
        self, dataset: RetrievalDataset, identity: str, images: np.ndarray, texts: np.ndarray
    ) -> None:
        """Write atomically (temp file + rename); no-op when caching is off."""
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.path(dataset, identity)
        with atomic_write(target, prefix=".tmp-") as out:
            meta = json.dumps(self._meta(dataset, identity), sort_keys=True)
            np.savez(out, images=images, texts=texts, meta=np.array(meta))

    @staticmethod
    def _meta(dataset: RetrievalDataset, identity: str) -> dict[str, Any]:
        return {
            "format": CACHE_FORMAT,
            "dataset": dataset.fingerprint(),
            "model": identity,
            "images": len(dataset.images),
            "captions": len(dataset.captions),
        }
