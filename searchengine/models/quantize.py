"""A lighter image tower: int8 weights, built once per model and checked before use.

On a CPU the image tower is most of an ingest's work (ViT-B-32-256: ~170 ms of a core
per photo in fp32, against ~70 ms to read and decode a 12 MP JPEG), so a tower that
computes in 8-bit integers is the one way left to embed photos faster than the cores
allow in fp32. ONNX Runtime's dynamic quantization makes it from the fp32 export:
the weights of every matrix product become int8, one scale per output channel, in
7 bits (``reduce_range``); activations are quantized to uint8 per tensor as each call
runs, so no calibration photos are baked into the model. The patch convolution stays
fp32: ONNX Runtime's ``ConvInteger`` is slower than its fp32 ``Conv`` (ViT-B-32-256, one
thread, per-op profile: 11.6-11.9 ms a photo against 4.4-4.8, ~7 % of the int8 tower).
The seventh bit matters on x86 CPUs without VNNI (AVX2 only, e.g. AMD EPYC before Zen 4):
there ONNX Runtime multiplies uint8 by int8 with ``vpmaddubsw``, whose 16-bit sum of two
products saturates at 8-bit weights. Random-weight ViT-B-32-256 on such a CPU: cosine
to fp32 mean 0.9864 (min 0.9755) with 8-bit weights, so its check refused it; 0.9998
(min 0.9997) with 7. With 7-bit weights no sum saturates, so the tower computes the same
on every CPU and its verdict holds wherever the export is shared. The attention's
activation-by-activation products stay fp32. The tower runs 2.1x faster than fp32
on a Xeon with AVX-512 VNNI (ViT-B-32-256, batch 8, one-thread calls side by side) and
1.5-1.75x on an AVX2-only AMD EPYC (``scripts/check_int8_bits.py``); its file is a
quarter of the size. Static quantization (QDQ,
all 61 matrix products, calibrated on photos) measured no faster and would depend on
its calibration set, so it was left out.

Vectors change, so the tower is opt-in (``--precision int8``), recorded in the
collection, and checked before any photo is embedded with it: the fp32 and int8
towers embed the same sample of photos (the collection's own) and the tower passes
when the cosine of every pair is at least ``MIN_COSINE``, their mean at least
``MEAN_COSINE``, and ``QUERIES`` rank the sample alike (mean top-10 overlap at
least ``MIN_OVERLAP``). The verdict is stored beside the export (``int8.json``);
``image.int8.onnx`` exists only when it passed, so a model that failed is never
run in int8 and is not checked again. A verdict of another ONNX Runtime version is
stale: the tower is built and checked again, since its file is that version's
optimised graph (fused operators it may not know) and the check measured that
version's kernels.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from searchengine.fsutil import FileLock, atomic_write
from searchengine.models.base import l2_normalize
from searchengine.models.onnx import INT8_IMAGE, OnnxClipEncoder, int8_session_options

VERDICT_FILE = "int8.json"
MEAN_COSINE = 0.99  # int8 against fp32, over the sample
MIN_COSINE = 0.98  # every photo of the sample
MIN_OVERLAP = 0.8  # mean share of each query's top 10 that both towers agree on
# How the int8 tower is built. A verdict of another build is stale: the tower is built
# and checked again (1: 8-bit weights, which saturate on CPUs without VNNI, and an
# int8 patch convolution; 2: 7-bit weights, matrix products only; 3: as 2, its graph
# saved already optimized, so that a session opens it in a third of the time).
BUILD = 3
TOP = 10
SAMPLE = 32  # photos the check embeds twice: ~5 s once per model, for ViT-B-32
CHUNK = 8  # photos per call while checking: bounds memory
QUERIES = (
    "a photo of a dog",
    "kids building a sandcastle on the beach",
    "a red car at night",
    "a plate of food on a table",
    "snowy mountains under a blue sky",
    "a group of people smiling",
    "a cat asleep on a sofa",
    "a city street at dusk",
)


@dataclass(frozen=True)
class Verdict:
    """How the int8 tower of one model compared with its fp32 tower.

    Attributes:
        passed: whether photos may be embedded with it.
        images: photos in the sample.
        mean_cosine: mean cosine of int8 to fp32 vectors over the sample.
        min_cosine: the lowest of them.
        overlap: mean top-10 overlap of ``QUERIES`` over the sample (top half of it
            for samples under 20 photos); None under 4 photos.
        reason: why it failed; empty when it passed.
        onnxruntime: the version that built it.
        build: how it was built (``BUILD`` when current; 1 before builds were noted).
    """

    passed: bool
    images: int
    mean_cosine: float
    min_cosine: float
    overlap: float | None
    reason: str = ""
    onnxruntime: str = ""
    build: int = BUILD

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Verdict:
        overlap = data.get("overlap")
        return cls(
            bool(data["passed"]),
            int(data["images"]),
            float(data["mean_cosine"]),
            float(data["min_cosine"]),
            None if overlap is None else float(overlap),
            str(data.get("reason") or ""),
            str(data.get("onnxruntime") or ""),
            int(data.get("build") or 1),
        )

    def summary(self) -> str:
        """One line: what the check measured."""
        overlap = "" if self.overlap is None else f", top-{TOP} overlap {self.overlap:.2f}"
        return (
            f"on {self.images} photos: cosine to fp32 mean {self.mean_cosine:.4f}, "
            f"min {self.min_cosine:.4f}{overlap}"
        )


def read_verdict(folder: Path) -> Verdict | None:
    """The stored verdict for the export in ``folder``; None if the tower was never checked,
    was built another way (an older ``BUILD``) or by another ONNX Runtime version (it is
    built and checked again), or passed but its file is gone (e.g. a crash before it was
    put in place)."""
    import onnxruntime as ort

    try:
        verdict = Verdict.from_dict(json.loads((folder / VERDICT_FILE).read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if verdict.build != BUILD or verdict.onnxruntime != str(ort.__version__):
        return None
    if verdict.passed and not (folder / INT8_IMAGE).is_file():
        return None
    return verdict


def prepare_int8(encoder: OnnxClipEncoder, pixels: np.ndarray) -> Verdict:
    """Build the int8 image tower of ``encoder``'s model and check it, once per model.

    Args:
        encoder: the model's fp32 ONNX encoder.
        pixels: a preprocessed sample (N, 3, H, W) of the photos it will embed.

    Returns:
        The verdict; stored beside the export, so a later call returns it unchanged.
        ``image.int8.onnx`` is put in place only when it passed.
    """
    folder = encoder.folder
    with FileLock(folder.parent / f".{folder.name}.int8.lock", blocking=True):
        found = read_verdict(folder)  # another process may have just made it
        if found is not None:
            return found
        tmp = folder / f".{INT8_IMAGE}.tmp-{os.getpid()}"
        try:
            build_int8(folder / encoder.image_file, tmp)
            verdict = check_int8(encoder, tmp, pixels)
            with atomic_write(folder / VERDICT_FILE) as out:
                out.write((json.dumps(verdict.to_dict(), indent=2) + "\n").encode())
            if verdict.passed:
                os.replace(tmp, folder / INT8_IMAGE)
            else:  # a tower of an older build that this one replaces must not be run
                (folder / INT8_IMAGE).unlink(missing_ok=True)
        finally:
            tmp.unlink(missing_ok=True)
    return verdict


def build_int8(source: Path, target: Path) -> None:
    """Quantize the fp32 image tower ``source`` into ``target`` (one file, ~1/4 the size).

    The quantized graph is then saved as ONNX Runtime optimizes it at the extended
    level, which every session of it would otherwise do again on opening (~0.3 s of
    ViT-B-32-256's ~0.45 s); ``onnx.int8_session_options`` opens it without that.
    """
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    plain = target.with_name(f"{target.name}.plain")
    try:
        # The quantizer advises pre-processing on the root logger; its graph is
        # already the exporter's optimised one, and the check is what decides.
        with _quiet():
            quantize_dynamic(
                str(source), str(plain), weight_type=QuantType.QInt8, per_channel=True,
                reduce_range=True,  # 7-bit weights: no saturation without VNNI (see above)
                op_types_to_quantize=["MatMul", "Gemm"],  # the patch convolution stays fp32
            )  # fmt: skip
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # Not the "all" level: its layout changes are chosen for this CPU's
        # instructions, and the file may be shared with other machines.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(target)
        ort.InferenceSession(str(plain), options, providers=["CPUExecutionProvider"])
    finally:
        plain.unlink(missing_ok=True)


def check_int8(encoder: OnnxClipEncoder, int8_path: Path, pixels: np.ndarray) -> Verdict:
    """Compare the int8 tower at ``int8_path`` with ``encoder``'s fp32 one on ``pixels``."""
    import onnxruntime as ort

    options = int8_session_options(ort.SessionOptions())
    options.log_severity_level = 3
    session = ort.InferenceSession(str(int8_path), options, providers=["CPUExecutionProvider"])
    version = str(ort.__version__)
    if len(pixels) == 0:
        return Verdict(False, 0, 0.0, 0.0, None, "no photo to check it on", version)
    chunks = [pixels[i : i + CHUNK] for i in range(0, len(pixels), CHUNK)]
    fp32 = np.concatenate([encoder.encode_pixels(c) for c in chunks])
    # One photo a call, as ``OnnxClipEncoder`` runs the int8 tower.
    rows = [session.run(None, {"pixels": pixels[i : i + 1]})[0] for i in range(len(pixels))]
    int8 = l2_normalize(np.concatenate(rows))
    cosines = (fp32 * int8).sum(axis=1)
    mean, lowest = float(cosines.mean()), float(cosines.min())
    overlap = _overlap(fp32, int8, encoder.encode_texts(list(QUERIES)))
    reason = ""
    if lowest < MIN_COSINE:
        reason = f"a photo's cosine to fp32 is {lowest:.4f} (< {MIN_COSINE})"
    elif mean < MEAN_COSINE:
        reason = f"mean cosine to fp32 is {mean:.4f} (< {MEAN_COSINE})"
    elif overlap is not None and overlap < MIN_OVERLAP:
        reason = f"queries rank the photos differently (top-{TOP} overlap {overlap:.2f})"
    return Verdict(not reason, len(pixels), mean, lowest, overlap, reason, version)


def _overlap(fp32: np.ndarray, int8: np.ndarray, texts: np.ndarray) -> float | None:
    """Mean share of each text's top results both towers agree on."""
    n = len(fp32)
    if n < 4:
        return None
    top = min(TOP, n // 2)
    shares = []
    for text in texts:
        ours = set(np.argsort(-(int8 @ text), kind="stable")[:top].tolist())
        theirs = set(np.argsort(-(fp32 @ text), kind="stable")[:top].tolist())
        shares.append(len(ours & theirs) / top)
    return float(np.mean(shares))


@contextlib.contextmanager
def _quiet() -> Any:
    """Silence the quantizer's advice. It logs through ``logging.warning``, which would
    also install a handler on the root logger for the rest of the process: a handler
    held here keeps it from doing that."""
    root = logging.getLogger()
    level, holder = root.level, logging.NullHandler()
    root.addHandler(holder)
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
        root.removeHandler(holder)
