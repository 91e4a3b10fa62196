"""The int8 image tower with 8-bit and with 7-bit weights, on this machine's CPU.

For each model: 32 photos of its kind (toy scenes for the toy models, the benchmark's
1 MP photos for the random-weight ViT-B-32s), the fp32 tower against the int8 tower of
the first build (8-bit weights, int8 patch convolution) and of the product's build
(``quantize.build_int8``: 7-bit weights, fp32 patch convolution), through the product's
own check (``quantize.check_int8``), and the CPU time of one photo a call on one thread
(best of two passes; the machine's noise between passes is several %). Prints whether
the CPU has VNNI, which decides whether 8-bit weights saturate (see
``searchengine/models/quantize.py``).

    python scripts/check_int8_bits.py [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ingest import default_model
from bench_rclip import write_models
from make_bench_corpus import make_corpus

PHOTOS = 32


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


def sample(kind: str, encoder: Any, work: Path) -> np.ndarray:
    """``PHOTOS`` preprocessed photos: toy scenes, or the benchmark's 1 MP photos."""
    from PIL import Image

    from searchengine.ingest.decode import decode_file
    from searchengine.toy.world import render, sample_scene

    if kind == "toy":
        rng = np.random.default_rng(11)
        images = [render(sample_scene(rng), (320, 240)) for _ in range(PHOTOS)]
    else:
        folder = work / "int8-bits-1mp"
        make_corpus(folder, PHOTOS, 1.0, broken=False)
        files = sorted(p for p in folder.rglob("*.jpg"))[:PHOTOS]
        images = [decode_file(str(f), min_side=encoder.image_size).image for f in files]
    return np.stack([encoder.preprocess(im.convert("RGB") if isinstance(im, Image.Image) else im)
                     for im in images]).astype(np.float32)  # fmt: skip


def ms_a_photo(path: Path, pixels: np.ndarray) -> float:
    """CPU ms of one photo a call on one thread, best of two passes over the sample."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    session.run(None, {"pixels": pixels[:1]})
    best = float("inf")
    for _ in range(2):
        start = time.process_time()
        for i in range(len(pixels)):
            session.run(None, {"pixels": pixels[i : i + 1]})
        best = min(best, 1000 * (time.process_time() - start) / len(pixels))
    return best


def measure(spec: str, kind: str, work: Path) -> dict[str, Any]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from searchengine.models import load_encoder
    from searchengine.models.quantize import _quiet, build_int8, check_int8

    encoder = load_encoder(spec, "cpu", "onnx")
    pixels = sample(kind, encoder, work)
    source = encoder.folder / encoder.image_file
    out: dict[str, Any] = {"fp32_ms": ms_a_photo(source, pixels)}
    with tempfile.TemporaryDirectory(prefix="int8-bits-") as tmp:
        for bits in ("8", "7"):
            target = Path(tmp) / f"image.int8-{bits}.onnx"
            if bits == "8":  # the first build: 8-bit weights, int8 patch convolution too
                with _quiet():
                    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8,
                                     per_channel=True)  # fmt: skip
            else:
                build_int8(source, target)  # the product's build
            verdict = check_int8(encoder, target, pixels)
            out[f"{bits}bit"] = {**verdict.to_dict(), "ms": ms_a_photo(target, pixels)}
            del out[f"{bits}bit"]["build"]
    encoder.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "searchengine-bench")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument(
        "--toy-only", action="store_true", help="only the shipped toy models (a quick check)"
    )
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    flags = cpu_flags()
    vnni = sorted(f for f in flags if "vnni" in f)
    print(f"CPU: {'VNNI (' + ', '.join(vnni) + ')' if vnni else 'no VNNI'}"
          f"{', AVX2' if 'avx2' in flags else ''}")  # fmt: skip
    models = [("toy", "toy", "toy"), ("toy-large", "toy-large", "toy")]
    if not args.toy_only:
        rclip_model = write_models(args.work / "peer-ViT-B-32-256", False, 4) / "searchengine"
        models += [
            ("ViT-B-32-256, random weights (the rclip model)", f"local-dir:{rclip_model}", "photo"),
            ("ViT-B-32, random weights", default_model(args.work)[0], "photo"),
        ]
    results: dict[str, Any] = {"vnni": vnni, "models": {}}
    print("| model | first build (8-bit): mean / min cosine, overlap | build now (7-bit) | "
          "ms a photo, one thread: fp32 / first / now |")  # fmt: skip
    print("|---|---|---|---|")
    for name, spec, kind in models:
        r = measure(spec, kind, args.work)
        results["models"][name] = r
        cells = []
        for bits in ("8bit", "7bit"):
            v = r[bits]
            word = "passed" if v["passed"] else "refused"
            cells.append(f"{v['mean_cosine']:.4f} / {v['min_cosine']:.4f}, "
                         f"{v['overlap']:.2f} ({word})")  # fmt: skip
        print(
            f"| {name} | {cells[0]} | {cells[1]} | "
            f"{r['fp32_ms']:.1f} / {r['8bit']['ms']:.1f} / {r['7bit']['ms']:.1f} |",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
