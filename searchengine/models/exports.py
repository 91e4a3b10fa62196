"""Where a model's ONNX export lives, and whether it is still the one to use.

One folder per model spec under ``$HF_HOME/searchengine-onnx`` (``onnx.py`` lists
what it holds), with a ``manifest.json``: the spec, the export format, the packages
that wrote it, whether it passed verification against torch (and why not), and every
file it was made from. ``read_export`` trusts a folder only while all of those still
hold; anything else means "no export" and a new one is made. Torch-free.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from searchengine.models.provenance import unchanged, writer_versions
from searchengine.models.spec import ModelSpec

__all__ = [
    "EXPORT_FORMAT",
    "MANIFEST",
    "MIN_COSINE",
    "Export",
    "export_dir",
    "onnx_cache_root",
    "read_export",
]

EXPORT_FORMAT = 5  # bump when the folder layout, manifest meaning or graphs change
MIN_COSINE = 0.999  # ONNX vs torch, every verification row
MANIFEST = "manifest.json"


def onnx_cache_root() -> Path:
    """``$HF_HOME/searchengine-onnx``: beside the weights the exports come from."""
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "searchengine-onnx"


def export_dir(spec: ModelSpec) -> Path:
    """The folder one model's export lives in (readable name + hash of the spec)."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", spec.spec).strip("_")[-60:]
    digest = hashlib.sha1(spec.spec.encode()).hexdigest()[:10]
    return onnx_cache_root() / f"{readable}-{digest}"


@dataclass(frozen=True)
class Export:
    """An export folder and its manifest."""

    folder: Path
    manifest: dict[str, Any]

    @property
    def verified(self) -> bool:
        return bool(self.manifest.get("verified"))

    @property
    def reason(self) -> str:
        return str(self.manifest.get("reason") or "")


def read_export(spec: ModelSpec) -> Export | None:
    """The export of ``spec`` if one exists for what it would be made from now.

    None when there is none, it is of another format, a file it was made from changed
    since (retrained weights, a newer hub snapshot, an edited tokenizer, even in another
    repo) or the packages that wrote it are not the installed ones.
    """
    folder = export_dir(spec)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("format") != EXPORT_FORMAT or manifest.get("spec") != spec.spec:
        return None
    if manifest.get("versions") != writer_versions():
        return None
    if not unchanged(manifest.get("sources", [])):
        return None
    return Export(folder, manifest)
