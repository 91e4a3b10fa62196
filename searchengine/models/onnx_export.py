"""Export an open_clip model's towers to ONNX once, and verify them against torch.

``export_model`` loads the model with torch (the same loader as ``OpenClipEncoder``),
exports both towers with ``torch.onnx.export`` (the image tower with TorchScript
where it works, as it runs faster; else dynamo), saves the torch-free
tokenizer's data, then runs the exported folder through the very ``OnnxClipEncoder``
that will use it and compares with torch:

- pixels: ``lite.preprocess_image`` against open_clip's transform (max abs diff);
- tokens: the torch-free tokenizer against open_clip's, on ``TOKEN_CHECK`` texts
  (a mismatch keeps ONNX but tokenizes with open_clip, i.e. imports torch);
- features: cosine of ONNX and torch image and text features, each row
  ``>= MIN_COSINE``, else the export is recorded as unusable and torch is used.

The folder is written under a temporary name and renamed into place, under a file
lock, so concurrent processes never see half an export.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from searchengine.fsutil import FileLock
from searchengine.models.exports import (
    EXPORT_FORMAT,
    MANIFEST,
    MIN_COSINE,
    Export,
    export_dir,
    read_export,
)
from searchengine.models.onnx_towers import CausalTextTower, ImageTower, TextTower, is_causal
from searchengine.models.onnx_verify import row_cosines, verify_export
from searchengine.models.provenance import hub_snapshot, record, repo_files, writer_versions
from searchengine.models.spec import ModelKind, ModelSpec

log = logging.getLogger(__name__)

OPSET = 18
BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"


def export_model(spec: ModelSpec) -> tuple[Export, Any]:
    """Export ``spec``'s towers to its cache folder and verify them.

    Returns:
        The export (``verified`` false with a ``reason`` when ONNX must not be
        used) and the torch ``OpenClipEncoder`` that was loaded for it, so a
        caller falling back to torch does not load the model twice.

    Raises:
        UnknownModelError, WeightsUnavailableError: as loading with torch would.
    """
    from searchengine.models.openclip import OpenClipEncoder

    torch_encoder = OpenClipEncoder(spec, "cpu")
    folder = export_dir(spec)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        with _lock(folder):
            existing = read_export(spec)  # another process may have just made it
            if existing is not None:
                return existing, torch_encoder
            log.info("exporting %s to ONNX in %s (once per model)", spec.spec, folder)
            # Holding the lock, any other temporary folder is a killed exporter's.
            for stale in folder.parent.glob(f".{folder.name}.*-*"):
                shutil.rmtree(stale, ignore_errors=True)
            tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
            tmp.mkdir()
            try:
                manifest = _export(spec, torch_encoder, tmp)
                _replace(tmp, folder)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except OSError as exc:
        manifest = {"verified": False, "reason": f"cannot write the ONNX cache: {exc}"}
        return Export(folder, manifest), torch_encoder
    return Export(folder, manifest), torch_encoder


def _export(spec: ModelSpec, torch_encoder: Any, folder: Path) -> dict[str, Any]:
    import open_clip

    model = torch_encoder._model
    manifest: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "spec": spec.spec,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": writer_versions(),
        "onnxruntime": _version("onnxruntime"),
        "opset": OPSET,
        "sources": record(_sources(spec, torch_encoder)),
        "dim": torch_encoder.dim,
        "image_size": torch_encoder.image_size,
        "logit_scale": torch_encoder.logit_scale,
        "preprocess": _preprocess_cfg(open_clip.get_model_preprocess_cfg(model)),
        "files": {"image": "image.onnx", "text": "text.onnx"},
        "verified": False,
    }
    try:
        manifest["text"] = _export_towers(model, torch_encoder._tokenizer, folder, manifest)
        manifest["tokenizer"] = _tokenizer_settings(torch_encoder._tokenizer, folder)
        verify_export(torch_encoder, folder, manifest)
    except Exception as exc:  # the exporter fails in many ways; any of them means torch
        manifest["verified"] = False
        manifest["reason"] = f"export failed: {type(exc).__name__}: {exc}"[:500]
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _export_towers(
    model: Any, tokenizer: Any, folder: Path, manifest: dict[str, Any]
) -> dict[str, Any]:
    size = manifest["image_size"]
    batch = torch.export.Dim("batch", min=1, max=4096)
    exporter = _export_image_tower(model, size, batch, folder / "image.onnx")
    manifest["exporters"] = {"image": exporter, "text": "dynamo"}
    tokens = tokenizer(["a photo of a dog", "a cat"])
    if is_causal(model):
        context = int(tokens.shape[1])
        length = torch.export.Dim("length", min=1, max=context)
        sample = tokens[:, :12]
        embedded = model.token_embedding(sample).detach()
        _onnx_export(
            CausalTextTower(model),
            (embedded, sample),
            ["embeddings", "tokens"],
            ({0: batch, 1: length}, {0: batch, 1: length}),
            folder / "text.onnx",
        )
        table = model.token_embedding.weight.detach().float().numpy()
        np.save(folder / "token_embedding.npy", table)
        manifest["files"]["embedding"] = "token_embedding.npy"
        eos = getattr(model, "text_eos_id", None)
        return {"mode": "causal", "pool": model.text_pool_type, "eos_id": eos}
    _onnx_export(TextTower(model), (tokens,), ["tokens"], ({0: batch},), folder / "text.onnx")
    return {"mode": "fixed"}


def _onnx_export(
    module: Any, args: tuple[Any, ...], names: list[str], shapes: tuple[Any, ...], path: Path
) -> None:
    """Export ``module`` with the dynamo exporter: ``path`` (graph), ``path.data`` (weights)."""
    import torch

    # The exporter narrates on stdout and warns about open_clip's shape checks;
    # neither is for the user (the result is verified below).
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        torch.inference_mode(False),
    ):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module.eval(),
            args,
            dynamo=True,
            input_names=names,
            output_names=["features"],
            dynamic_shapes=shapes,
            opset_version=OPSET,
            external_data=False,
            verbose=False,
        )
        assert program is not None
        # Weights beside the graph: ONNX Runtime maps that file instead of parsing and
        # copying it, so a session opens faster and the pages stay shared with the cache.
        program.save(str(path), external_data=True)


def _export_image_tower(model: Any, size: int, batch: Any, path: Path) -> str:
    """The image tower, with the TorchScript exporter where it works for this model.

    ONNX Runtime runs the TorchScript exporter's graph of an open_clip ViT ~10 % faster
    on a CPU than the dynamo exporter's (ViT-B-32 at 256 px, batch 8, one thread: 94
    against 104 ms an image, same weights, cosine 1.0000), and the image tower is most
    of an ingest's CPU. A tracer bakes in what it cannot see as dynamic, so the graph
    must give torch's features at other batch sizes than the traced one; otherwise
    (or on a torch without that exporter) the dynamo exporter makes it.

    Returns:
        The exporter that made it: ``torchscript`` or ``dynamo``.
    """
    tower = ImageTower(model)
    pixels = torch.zeros(2, 3, size, size)
    try:
        _torchscript_export(tower, pixels, path)
        _check_batches(tower, size, path)
        return "torchscript"
    except Exception as exc:  # a torch without it, a graph it cannot trace, a bad graph
        log.info("TorchScript export of the image tower not used (%s); using dynamo", exc)
        for leftover in (path, _weights(path)):
            leftover.unlink(missing_ok=True)
    _onnx_export(tower, (pixels,), ["pixels"], ({0: batch},), path)
    return "dynamo"


def check_session(path: Path) -> Any:
    """An ONNX Runtime session on the graph at ``path``, for ``_check_batches``."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _check_batches(tower: Any, size: int, path: Path) -> None:
    """Raise unless the graph at ``path`` gives ``tower``'s features for 1 and 3 images."""
    session = check_session(path)
    generator = torch.Generator().manual_seed(0)
    for count in (1, 3):
        pixels = torch.randn(count, 3, size, size, generator=generator)
        with torch.no_grad():
            expected = tower(pixels).numpy()
        got = session.run(None, {"pixels": pixels.numpy()})[0]
        if got.shape != expected.shape or float(row_cosines(got, expected).min()) < MIN_COSINE:
            raise ValueError(f"the traced graph is wrong for {count} images")


def _torchscript_export(tower: Any, pixels: Any, path: Path) -> None:
    import onnx

    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        torch.inference_mode(False),
    ):
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer warnings
        torch.onnx.export(
            tower.eval(),
            (pixels,),
            str(path),
            dynamo=False,
            input_names=["pixels"],
            output_names=["features"],
            dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}},
            opset_version=OPSET,
        )
    # Weights beside the graph, as the dynamo exporter's are saved (see ``_onnx_export``).
    graph = onnx.load(str(path))
    onnx.save_model(
        graph,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=_weights(path).name,
        size_threshold=1024,
    )
    # onnx writes the weights owner-only; a shared model cache needs the graph's mode.
    _weights(path).chmod(path.stat().st_mode & 0o777)


def _weights(graph: Path) -> Path:
    """Where a graph's weights are saved beside it (both exporters' naming)."""
    return graph.with_name(graph.name + ".data")


def _tokenizer_settings(tokenizer: Any, folder: Path) -> dict[str, Any] | None:
    """What ``lite.load_tokenizer`` needs to reproduce ``tokenizer``; None if it cannot."""
    clips = getattr(tokenizer, "clips", None)
    if clips is not None:  # CLIPS: the same torch-free tokenizer, from a copy of its vocabulary
        (folder / "tokenizer.json").write_text(clips.to_json())
        return {
            "kind": "clips",
            "file": "tokenizer.json",
            "context_length": clips.context_length,
            "clean": clips.clean,
        }
    clean = {
        "_clean_lower": "lower",
        "_clean_whitespace": "whitespace",
        "_clean_canonicalize": "canonicalize",
    }.get(getattr(getattr(tokenizer, "clean_fn", None), "__name__", ""))
    context = getattr(tokenizer, "context_length", None)
    if clean is None or not context:
        return None
    kind = type(tokenizer).__name__
    if kind == "SimpleTokenizer" and getattr(tokenizer, "reduction_fn", None) is None:
        from open_clip.tokenizer import default_bpe

        shutil.copyfile(default_bpe(), folder / BPE_FILE)
        return {"kind": "clip_bpe", "file": BPE_FILE, "context_length": context, "clean": clean}
    hf: Any = getattr(tokenizer, "tokenizer", None)
    if kind == "HFTokenizer" and getattr(hf, "is_fast", False):
        (folder / "tokenizer.json").write_text(hf.backend_tokenizer.to_str())
        return {
            "kind": "hf",
            "file": "tokenizer.json",
            "context_length": context,
            "clean": clean,
            "strip_sep_token": bool(getattr(tokenizer, "strip_sep_token", False)),
            "pad": hf.pad_token_id,
            "sep": hf.sep_token_id,
        }
    return None


def _preprocess_cfg(cfg: dict[str, Any]) -> dict[str, Any]:
    from searchengine.models.lite import Preprocess

    return Preprocess.from_dict(cfg).to_dict()


def _sources(spec: ModelSpec, torch_encoder: Any) -> list[Path]:
    """Every file the export was made from: the model's, and its tokenizer's wherever it lives."""
    paths: list[Path] = []
    if spec.kind is ModelKind.OPEN_CLIP and os.path.isabs(spec.source):
        paths.append(Path(spec.source))
    elif spec.kind is ModelKind.OPEN_CLIP_DIR:
        paths += [p for p in sorted(Path(spec.source).iterdir()) if p.is_file()]
    else:
        from searchengine.models.loading import hub_repo

        repo_id = hub_repo(spec)
        snapshot = hub_snapshot(repo_id) if repo_id else None
        paths += repo_files(snapshot) if snapshot else []
    clips = getattr(torch_encoder._tokenizer, "clips", None)
    if clips is not None:
        paths.append(clips.path)
    else:
        text = (getattr(torch_encoder, "model_cfg", None) or {}).get("text_cfg") or {}
        source = str(text.get("hf_tokenizer_name") or "")
        if source and os.path.isdir(source):
            paths += [p for p in repo_files(Path(source)) if p.stat().st_size <= 64 << 20]
        elif source and spec.kind is not ModelKind.OPEN_CLIP_DIR:
            snapshot = hub_snapshot(source)
            paths += repo_files(snapshot) if snapshot else []
    return paths


def _version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


def _replace(tmp: Path, folder: Path) -> None:
    """Put ``tmp`` where ``folder`` is; a reader sees the old export, none, or the new."""
    old = folder.parent / f".{folder.name}.old-{os.getpid()}"
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def _lock(folder: Path) -> FileLock:
    """One exporting process per model; the others wait, then reuse its export."""
    return FileLock(folder.parent / f".{folder.name}.lock", blocking=True)
