#!/usr/bin/env python
"""Ingest benchmark: end-to-end images/s against the model-only ceiling, re-run cost, memory.

All ratios are measured in one run on one machine, so a busy machine slows both
sides alike. What it measures:

1. ``searchengine index CORPUS`` in a fresh process: images/s (embedded images over
   the command's wall time, and over the pipeline's own time), peak RSS.
2. The model-only ceiling: preprocessed tensors already in memory, ``encode_pixels``
   in batches, for each runtime the project supports (torch, onnx; ONNX also as
   one-thread calls side by side, as ingest runs it on a CPU) and batch sizes 8, 16
   and 32, best of ``--ceiling-rounds``; the ratio of (1) to the fastest of all.
   With ``--precision int8``, the int8 image tower (ONNX only) in the ceiling and
   the command alike.
3. The machine's bound for the corpus: what ingest would reach if decoding and the
   model overlapped perfectly on all cores. Decoding alone is timed as ingest does it
   (read, hash, DCT-scaled decode, preprocess), on every core at once, best of
   ``--ceiling-rounds``: ``bound = 1 / (1 / ceiling + 1 / decode rate)``; the ratio
   of (1) to it, and the CPU a photo takes in the command against decoding's and the
   model's own (on a shared machine the wall ratio also counts cores others took).
   With ``--engine ray``, instead: ``index --engine ray`` against ``index --engine
   local`` on the same corpus, alternating (``--rounds`` of each, fresh collections),
   on a one-node Ray cluster started once (``scripts/raycluster.py``, as ``ray start
   --head`` would be on a cluster): images/s of each and their ratio per round; plus
   one run that starts its own Ray, to show what that costs. With ``--paired N``,
   only the ingest over the bound as ``bench_rclip.py`` measures it, side by side in
   each of N rounds (the bound over the whole corpus, then ``index``), and the median
   of the N ratios: on a shared machine the best of one and the best of the other
   come from different spells.
4. The unchanged re-run of the same tree against a bare ``os.scandir`` + ``stat``
   walk of it; with ``--tree N`` also on a tree of N tiny files indexed with ``toy``
   (a re-run never runs the model, so the model does not matter there).

Without ``--model`` it uses ``ViT-B-32:openai`` when the weights are cached, else
ViT-B-32 with random weights written once to ``--work`` (identical compute; the
output says so). The one-time ONNX export happens before anything is timed.

Examples:
    python scripts/bench_ingest.py                         # 48 x 12 MP, a few minutes
    python scripts/bench_ingest.py -n 300 --json ingest.json
    python scripts/bench_ingest.py -n 300 --megapixels 1.9 # small images
    python scripts/bench_ingest.py -n 240 --precision int8 # the int8 image tower
    python scripts/bench_ingest.py -n 2000 --device cuda   # GPU: JPEGs decoded on the device
    python scripts/bench_ingest.py -n 200 --megapixels 1 --engine ray  # ray vs local
    python scripts/bench_ingest.py -n 240 --paired 5       # ingest over the bound, 5 rounds
    python scripts/bench_ingest.py -n 0 --tree 100000      # unchanged re-run of 100k files
    python scripts/bench_ingest.py -n 0 --tree 100000 --tree-index-dir ~/tree-idx  # keep it
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_bench_corpus import make_corpus

EXE = str(Path(sys.executable).with_name("searchengine"))


def compile_package() -> None:
    """Bring the package's bytecode up to date, as ``pip install`` leaves an installed
    package (and a peer's). An editable install under PYTHONDONTWRITEBYTECODE would
    otherwise compile every module it imports in every timed command."""
    import compileall

    import searchengine

    compileall.compile_dir(Path(searchengine.__file__).parent, quiet=1)


def default_model(work: Path) -> tuple[str, str]:
    """``ViT-B-32:openai`` when cached, else a random-weight ViT-B-32 checkpoint."""
    from huggingface_hub import try_to_load_from_cache

    repo = "timm/vit_base_patch32_clip_224.openai"
    for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
        if isinstance(try_to_load_from_cache(repo, name), str):
            return "ViT-B-32:openai", "ViT-B-32:openai (cached weights)"
    checkpoint = work / "ViT-B-32-random.pt"
    if not checkpoint.exists():
        import open_clip
        import torch

        work.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        model = open_clip.create_model("ViT-B-32", pretrained=None)
        torch.save(model.state_dict(), checkpoint)
    note = "ViT-B-32 with RANDOM weights (no ViT-B-32:openai in the HF cache): speed only"
    return f"ViT-B-32:{checkpoint}", note


# Measures one command from a small launcher process. Linux charges a child with the
# peak RSS of the process it was forked from until its exec, so forking the command
# from this script (which may hold torch after an export or a ceiling run) would
# report this script's memory as the command's.
_LAUNCHER = """
import json, os, sys, time
report, cmd = sys.argv[1], sys.argv[2:]
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(cmd[0], cmd)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - start
with open(report, "w") as handle:
    cpu = usage.ru_utime + usage.ru_stime
    json.dump({"seconds": seconds, "rss_kb": usage.ru_maxrss, "cpu": cpu, "status": status}, handle)
"""


def run(
    args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> dict[str, Any]:
    """Run a command: wall seconds, CPU seconds (user + system, all its threads), its own
    peak RSS (MB), its stdout."""
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.TemporaryDirectory() as tmp,
    ):
        report = Path(tmp) / "report.json"
        launcher = [sys.executable, "-c", _LAUNCHER, str(report), *args]
        subprocess.run(launcher, stdout=out, stderr=err, env=env, cwd=cwd, check=True)
        measured = json.loads(report.read_text())
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    code = os.waitstatus_to_exitcode(measured["status"])
    if code != 0:
        raise RuntimeError(f"{' '.join(args)} exited {code}: {stderr[-2000:]}")
    return {
        "seconds": measured["seconds"],
        "cpu_seconds": measured["cpu"],
        "peak_rss_mb": measured["rss_kb"] / 1024,
        "stdout": stdout,
    }


def prepare_int8_tower(model: str, work: Path, megapixels: float = 1.0) -> str:
    """Build and check ``model``'s int8 image tower once, as a first ``index --precision
    int8`` would, on photos of the benchmark's kind, so that no timed run pays for it.
    Returns what the check measured (printed too)."""
    sample = work / f"int8-check-{megapixels:g}mp"
    make_corpus(sample, 32, megapixels, broken=False)
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as home:
        run(index_cmd(sample, Path(home), model, ["--precision", "int8"]))
        status = run([EXE, "status", "--index-dir", home, "--json"])
    info = json.loads(status["stdout"])
    print(f"{model}: {info['precision_check']}")
    if info["precision"] != "int8":
        raise SystemExit(f"the int8 tower of {model} was refused")
    return str(info["precision_check"])


def walk(root: Path) -> int:
    """The bare minimum a re-run must do: list every entry and stat it."""
    count = 0
    stack = [str(root)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    entry.stat()
                    count += 1
    return count


def timed_walk(root: Path, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        walk(root)
        best = min(best, time.perf_counter() - start)
    return best


def index_cmd(corpus: Path, index_dir: Path, model: str, extra: list[str]) -> list[str]:
    return [EXE, "index", str(corpus), "--index-dir", str(index_dir), "-m", model, "--json", *extra]


class Rate(NamedTuple):
    """A throughput, and the CPU (all threads) it took a photo at that pace."""

    images_per_s: float
    cpu_ms_per_image: float


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def ceiling(
    model: str,
    device: str,
    runtime: str,
    batch: int,
    images: int,
    rounds: int,
    lanes: int = 1,
    precision: str = "fp32",
) -> Rate:
    """Images/s of ``encode_pixels`` alone on random preprocessed tensors.

    With ``lanes`` > 1 that many calls run side by side (one thread each, as ingest
    runs ONNX on a CPU). The best of ``rounds`` timings: the ceiling is what the model
    can do, so a round slowed by the machine must not lower it (and flatter the ratio).
    """
    from concurrent.futures import ThreadPoolExecutor

    from searchengine.models import load_encoder
    from searchengine.models.base import image_lanes

    encoder = load_encoder(model, device, runtime, precision)
    lanes = image_lanes(encoder, lanes)
    size = encoder.image_size
    pixels = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    calls = -(-images // (batch * lanes)) * lanes  # rounds of ~``images``, whatever the batch
    best = Rate(0.0, 0.0)
    with ThreadPoolExecutor(lanes) as pool:
        list(pool.map(encoder.encode_pixels, [pixels] * lanes))  # warm-up: first-call allocations
        for _ in range(rounds):
            start, cpu = time.perf_counter(), _cpu()
            list(pool.map(encoder.encode_pixels, [pixels] * calls))
            rate = batch * calls / (time.perf_counter() - start)
            if rate > best.images_per_s:
                best = Rate(rate, 1000 * (_cpu() - cpu) / (batch * calls))
    encoder.close()
    return best


def ceilings(args: argparse.Namespace, model: str) -> dict[str, Rate]:
    """The ceiling of every way the engine can run the model here, by name."""
    from searchengine.ingest.run import default_batch_size
    from searchengine.models.onnx import cpu_count

    # ONNX first: torch's worker threads keep spinning for a while after it ran.
    # On CUDA the engine runs torch (half precision), so that is the ceiling there.
    if args.device == "cuda":
        runtimes = ["torch"]
    elif args.precision == "int8":
        runtimes = ["onnx"]  # the int8 tower runs in ONNX Runtime only
    else:
        runtimes = ["onnx", "torch"] if args.runtime == "auto" else [args.runtime]
    if args.ceiling_batch:
        sizes = [args.ceiling_batch]
    elif args.device == "cuda":
        sizes = [default_batch_size(args.device)]
    else:
        sizes = [8, 16, 32]  # the model alone may prefer another batch than ingest does
    rates = {}
    for runtime in runtimes:
        # ONNX on a CPU: one call on all cores, and one-thread calls side by side.
        for lanes in [1, cpu_count()] if runtime == "onnx" and cpu_count() > 1 else [1]:
            for size in sizes:
                name = f"{runtime}{' lanes' if lanes > 1 else ''} b{size}"
                rates[name] = ceiling(
                    model, args.device, runtime, size, args.ceiling_images, args.ceiling_rounds,
                    lanes, args.precision,
                )  # fmt: skip
    return rates


def load_all(entries: list[Any], encoder: Any) -> tuple[list[np.ndarray], Rate]:
    """Every file loaded as ingest loads it (read, hash, DCT-scaled decode, preprocess)
    on every core at once: the decoded photos' pixels, and the rate it ran at."""
    from concurrent.futures import ThreadPoolExecutor
    from functools import partial

    from searchengine.ingest.load import Pixels, load
    from searchengine.models.onnx import cpu_count

    start, cpu = time.perf_counter(), _cpu()
    with ThreadPoolExecutor(cpu_count()) as pool:
        items = list(pool.map(partial(load, model=encoder, known_hashes=frozenset()), entries))
    seconds, used = time.perf_counter() - start, _cpu() - cpu
    pixels = [item.pixels for item in items if isinstance(item, Pixels)]
    decoded = max(1, len(pixels))
    return pixels, Rate(decoded / seconds, 1000 * used / decoded)


def decode_rate(corpus: Path, model: str, device: str, rounds: int, files: int = 48) -> Rate:
    """Images/s of decoding alone, as ingest decodes (read, hash, DCT-scaled decode,
    preprocess), on every core at once; the best of ``rounds``."""
    from searchengine.ingest.scan import scan
    from searchengine.models import load_encoder

    encoder = load_encoder(model, device)  # only its preprocessing is used
    entries = [e for e in scan([corpus]) if e.path.lower().endswith((".jpg", ".jpeg"))][:files]
    best = max((load_all(entries, encoder)[1] for _ in range(rounds)), key=lambda r: r[0])
    encoder.close()
    return best


def corpus_rates(corpus: Path, model: str, precisions: list[str]) -> dict[str, Rate]:
    """Decoding and each image tower alone, each once over the whole corpus, as ingest
    runs them: every file read, hashed, decoded and preprocessed on every core (PNGs
    and broken files included), then every decoded photo through the tower in batches
    of 8, one-thread calls side by side. Keys: ``decode`` and each precision.

    One try, over as many photos as an ingest round: the bound measured the way the
    tools are, so that neither a short quiet spell nor the best of several short tries
    favours it (``ceiling`` and ``decode_rate`` are those short tries).
    """
    from concurrent.futures import ThreadPoolExecutor

    from searchengine.ingest.scan import scan
    from searchengine.models import load_encoder
    from searchengine.models.base import image_lanes
    from searchengine.models.onnx import cpu_count

    preprocessor = load_encoder(model, "cpu")  # only its preprocessing is used
    pixels, decoding = load_all(list(scan([corpus])), preprocessor)
    preprocessor.close()
    batches = [np.stack(pixels[i : i + 8]) for i in range(0, len(pixels), 8)]
    del pixels
    out = {"decode": decoding}
    for precision in precisions:
        encoder = load_encoder(model, "cpu", "onnx", precision)
        lanes = image_lanes(encoder, cpu_count())
        with ThreadPoolExecutor(lanes) as pool:
            list(pool.map(encoder.encode_pixels, [batches[0][:1]] * lanes))  # session, warm
            start, cpu = time.perf_counter(), _cpu()
            list(pool.map(encoder.encode_pixels, batches))
            seconds, used = time.perf_counter() - start, _cpu() - cpu
        encoder.close()
        photos = sum(len(b) for b in batches)
        out[precision] = Rate(photos / seconds, 1000 * used / photos)
    return out


def bound(ceiling_rate: float, decode: float) -> float:
    """Images/s with decoding and the model overlapped perfectly on all cores."""
    return 1 / (1 / ceiling_rate + 1 / decode)


def cpu_count() -> int:
    from searchengine.models.onnx import cpu_count as usable

    return usable()


def bench_corpus(args: argparse.Namespace, model: str, work: Path) -> dict[str, Any]:
    corpus = args.corpus or work / f"corpus-{args.n}-{args.megapixels:g}mp"
    make_corpus(corpus, args.n, args.megapixels)
    files = walk(corpus)
    index_dir = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    extra = ["--runtime", args.runtime, "--device", args.device, "--precision", args.precision]
    if args.batch_size:
        extra += ["--batch-size", str(args.batch_size)]
    if args.workers:
        extra += ["--workers", str(args.workers)]
    try:
        first = run(index_cmd(corpus, index_dir, model, extra))
        report = json.loads(first["stdout"])
        rerun = run(index_cmd(corpus, index_dir, model, extra))
        walk_s = timed_walk(corpus)
    finally:
        shutil.rmtree(index_dir, ignore_errors=True)
    embedded = report["embedded"]
    out: dict[str, Any] = {
        "corpus": str(corpus),
        "files": files,
        "megapixels": args.megapixels,
        "embedded": embedded,
        "failed": report["failed"],
        "command_seconds": first["seconds"],
        "command_cpu_seconds": first["cpu_seconds"],
        "cores_busy": first["cpu_seconds"] / first["seconds"],
        "cpu_ms_per_image": 1000 * first["cpu_seconds"] / max(embedded, 1),
        "pipeline_seconds": report["seconds"],
        "images_per_s_command": embedded / first["seconds"],
        "images_per_s_pipeline": embedded / max(report["seconds"], 1e-9),
        "peak_rss_mb": first["peak_rss_mb"],
        "rerun_seconds": rerun["seconds"],
        "walk_seconds": walk_s,
        "rerun_over_walk": rerun["seconds"] / walk_s,
    }
    if not args.skip_ceiling:
        measured = ceilings(args, model)
        rates = {name: r.images_per_s for name, r in measured.items()}
        best = max(rates, key=lambda r: rates[r])
        out["ceiling_images_per_s"] = rates
        out["ceiling_best_runtime"] = best
        out["ratio_to_ceiling_pipeline"] = out["images_per_s_pipeline"] / rates[best]
        out["ratio_to_ceiling_command"] = out["images_per_s_command"] / rates[best]
        decode = decode_rate(corpus, model, args.device, args.ceiling_rounds)
        out["decode_images_per_s"] = decode.images_per_s
        out["bound_images_per_s"] = bound(rates[best], decode.images_per_s)
        out["ratio_to_bound_pipeline"] = out["images_per_s_pipeline"] / out["bound_images_per_s"]
        out["ratio_to_bound_command"] = out["images_per_s_command"] / out["bound_images_per_s"]
        # Where the rest goes. Work: the CPU a photo takes in the command against the
        # model's and decoding's own CPU a photo (measured alone); wall: cores the
        # command left idle. On a machine shared with other work, the wall ratio also
        # counts the cores others took, which the CPU ratio does not.
        out["model_cpu_ms_per_image"] = measured[best].cpu_ms_per_image
        out["decode_cpu_ms_per_image"] = decode.cpu_ms_per_image
        bound_cpu = decode.cpu_ms_per_image + measured[best].cpu_ms_per_image
        out["bound_cpu_ms_per_image"] = bound_cpu
        out["ratio_to_bound_cpu"] = bound_cpu / out["cpu_ms_per_image"]
        out["idle_cores"] = cpu_count() - out["cores_busy"]
    return out


def bench_paired(args: argparse.Namespace, model: str, work: Path) -> dict[str, Any]:
    """The ingest over the bound, round by round: each round measures the bound the way
    the tools are measured (``corpus_rates``) and then runs ``index`` on the corpus, so
    that each ratio is of two things a minute apart, not of two bests picked from
    spells minutes apart; the median over the rounds is the figure."""
    corpus = args.corpus or work / f"corpus-{args.n}-{args.megapixels:g}mp"
    if args.corpus is None:  # a folder given is used as it is
        make_corpus(corpus, args.n, args.megapixels)
    extra = ["--runtime", "onnx", "--device", "cpu", "--precision", args.precision]
    rounds = []
    for _ in range(args.paired):
        rates = corpus_rates(corpus, model, [args.precision])
        limit = bound(rates[args.precision].images_per_s, rates["decode"].images_per_s)
        index_dir = Path(tempfile.mkdtemp(prefix="bench-paired-"))
        try:
            done = run(index_cmd(corpus, index_dir, model, extra))
        finally:
            shutil.rmtree(index_dir, ignore_errors=True)
        report = json.loads(done["stdout"])
        embedded = report["embedded"]
        rounds.append(
            {
                "bound_images_per_s": limit,
                "images_per_s": embedded / done["seconds"],
                "pipeline_images_per_s": embedded / max(report["seconds"], 1e-9),
                "ratio": embedded / done["seconds"] / limit,
                "pipeline_ratio": embedded / max(report["seconds"], 1e-9) / limit,
            }
        )
    return {
        "corpus": str(corpus),
        "precision": args.precision,
        "rounds": rounds,
        "median_ratio": statistics.median(r["ratio"] for r in rounds),
        "median_pipeline_ratio": statistics.median(r["pipeline_ratio"] for r in rounds),
    }


def bench_engines(args: argparse.Namespace, model: str, work: Path) -> dict[str, Any]:
    """``--engine ray`` against ``--engine local`` on one corpus, rounds alternating."""
    from raycluster import RAY_ENV, RayHead

    corpus = args.corpus or work / f"corpus-{args.n}-{args.megapixels:g}mp"
    make_corpus(corpus, args.n, args.megapixels)
    extra = ["--runtime", args.runtime, "--device", args.device]
    if args.batch_size:
        extra += ["--batch-size", str(args.batch_size)]
    env = {**os.environ, **RAY_ENV}
    head = RayHead(cpus=os.cpu_count() or 1, object_store_mb=512, unprivileged=False)
    rounds: list[dict[str, float]] = []
    try:
        engines = {
            "local": ["--engine", "local"],
            "ray": ["--engine", "ray", "--ray-address", head.address],
        }
        for _ in range(args.rounds):
            measured: dict[str, float] = {}
            for name, flags in engines.items():
                index_dir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
                try:
                    done = run(index_cmd(corpus, index_dir, model, extra + flags), env=env)
                finally:
                    shutil.rmtree(index_dir, ignore_errors=True)
                report = json.loads(done["stdout"])
                measured[f"{name}_images_per_s"] = report["embedded"] / report["seconds"]
                measured[f"{name}_command_images_per_s"] = report["embedded"] / done["seconds"]
                measured[f"{name}_peak_rss_mb"] = done["peak_rss_mb"]
            measured["ratio"] = measured["ray_images_per_s"] / measured["local_images_per_s"]
            measured["ratio_command"] = (
                measured["ray_command_images_per_s"] / measured["local_command_images_per_s"]
            )
            rounds.append(measured)
    finally:
        head.stop()
    index_dir = Path(tempfile.mkdtemp(prefix="bench-ray-own-"))
    try:  # no address: the run starts (and stops) a Ray instance of its own
        own = run(index_cmd(corpus, index_dir, model, [*extra, "--engine", "ray"]), env=env)
    finally:
        shutil.rmtree(index_dir, ignore_errors=True)
    own_report = json.loads(own["stdout"])
    ratios = sorted(r["ratio"] for r in rounds)
    return {
        "corpus": str(corpus),
        "files": walk(corpus),
        "megapixels": args.megapixels,
        "rounds": rounds,
        "ratio_median": ratios[len(ratios) // 2],
        "own_instance_command_seconds": own["seconds"],
        "own_instance_pipeline_seconds": own_report["seconds"],
        "own_instance_embedded": own_report["embedded"],
    }


def bench_tree(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    tree = work / f"tree-{args.tree}"
    make_corpus(tree, args.tree, megapixels=0.003, broken=False)
    # Indexing 100k files first takes ~10 min here; --tree-index-dir keeps that index
    # for the next benchmark run (whose "first" run is then itself a re-run).
    index_dir = args.tree_index_dir or Path(tempfile.mkdtemp(prefix="bench-tree-"))
    try:
        first = run(index_cmd(tree, index_dir, "toy", ["--runtime", args.runtime]))
        reruns = [
            run(index_cmd(tree, index_dir, "toy", ["--runtime", args.runtime]))
            for _ in range(args.repeat)
        ]
        rerun = min(reruns, key=lambda r: r["seconds"])
        report = min((json.loads(r["stdout"]) for r in reruns), key=lambda r: r["seconds"])
        walk_s = timed_walk(tree)
    finally:
        if args.tree_index_dir is None:
            shutil.rmtree(index_dir, ignore_errors=True)
    return {
        "files": args.tree,
        "first_index_seconds": first["seconds"],
        "rerun_seconds": rerun["seconds"],
        "rerun_pipeline_seconds": report["seconds"],
        "rerun_unchanged": report["unchanged"],
        "walk_seconds": walk_s,
        "rerun_over_walk": rerun["seconds"] / walk_s,
        "rerun_pipeline_over_walk": report["seconds"] / walk_s,
        "rerun_peak_rss_mb": rerun["peak_rss_mb"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=48, help="corpus files (default 48; 0 skips)")
    parser.add_argument("--megapixels", type=float, default=12.0)
    parser.add_argument("--corpus", type=Path, default=None, help="use this folder as is")
    parser.add_argument("--model", default=None, help="model spec [default: see above]")
    parser.add_argument("--runtime", default="auto", choices=["auto", "torch", "onnx"])
    parser.add_argument(
        "--precision", default="fp32", choices=["fp32", "int8"], help="image tower (int8: ONNX)"
    )
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--tree", type=int, default=0, help="also: re-run of N tiny files")
    parser.add_argument(
        "--tree-index-dir", type=Path, default=None, help="keep the tree's index here"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="re-runs of the tree (the fastest counts)"
    )
    parser.add_argument("--skip-ceiling", action="store_true")
    parser.add_argument(
        "--engine",
        default="local",
        choices=["local", "ray"],
        help="ray: compare --engine ray with --engine local on the corpus (no ceiling)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="--engine ray: rounds of each")
    parser.add_argument(
        "--paired",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="only the ingest over the bound, measured side by side in each of ROUNDS "
        "rounds (ONNX on the CPU); the median counts",
    )
    parser.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: CUDA if present"
    )
    parser.add_argument(
        "--ceiling-batch",
        type=int,
        default=None,
        help="default: 8, 16 and 32 on a CPU (the fastest counts), the ingest's on CUDA",
    )
    parser.add_argument("--ceiling-images", type=int, default=128, help="images per round")
    parser.add_argument("--ceiling-rounds", type=int, default=3, help="the best round counts")
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "searchengine-bench")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    compile_package()

    from searchengine.models.loading import resolve_device

    args.device = resolve_device(args.device)
    results: dict[str, Any] = {"cpus": os.cpu_count(), "argv": sys.argv[1:], "device": args.device}
    if args.n:
        model, note = (args.model, args.model) if args.model else default_model(args.work)
        print(f"model: {note}")
        from searchengine.models import load_encoder

        start = time.perf_counter()
        load_encoder(model, args.device, args.runtime).close()  # one-time ONNX export, untimed
        if args.precision == "int8":  # once per model, untimed
            results["int8_check"] = prepare_int8_tower(model, args.work, min(args.megapixels, 1))
        results["model"] = note
        results["model_load_or_export_seconds"] = time.perf_counter() - start
        if args.paired:
            results["paired"] = bench_paired(args, model, args.work)
            _print_paired(results["paired"])
        elif args.engine == "ray":
            results["engines"] = bench_engines(args, model, args.work)
            _print_engines(results["engines"])
        else:
            results["corpus"] = bench_corpus(args, model, args.work)
            _print_corpus(results["corpus"])
    if args.tree:
        results["tree"] = bench_tree(args, args.work)
        _print_tree(results["tree"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def _print_paired(r: dict[str, Any]) -> None:
    print(f"\n{r['corpus']}, {r['precision']}: ingest over the bound, round by round")
    for i, one in enumerate(r["rounds"], 1):
        print(
            f"  round {i}: bound {one['bound_images_per_s']:.2f} images/s, ingest "
            f"{one['images_per_s']:.2f} ({one['ratio']:.3f} of it; the pipeline without "
            f"start-up {one['pipeline_ratio']:.3f})"
        )
    print(
        f"  median: {r['median_ratio']:.3f} of the bound "
        f"(the pipeline without start-up {r['median_pipeline_ratio']:.3f})"
    )


def _print_engines(r: dict[str, Any]) -> None:
    print(f"corpus: {r['files']} files, {r['megapixels']:g} MP JPEGs")
    for i, m in enumerate(r["rounds"], 1):
        print(
            f"round {i}: local {m['local_images_per_s']:.1f} images/s, ray "
            f"{m['ray_images_per_s']:.1f} images/s: ratio {m['ratio']:.2f} (commands: "
            f"{m['local_command_images_per_s']:.1f} vs {m['ray_command_images_per_s']:.1f}, "
            f"{m['ratio_command']:.2f}); peak RSS of the ray driver {m['ray_peak_rss_mb']:.0f} MB"
        )
    print(f"ray / local, median of the rounds: {r['ratio_median']:.2f}")
    print(
        f"a run that starts its own Ray: {r['own_instance_command_seconds']:.1f} s command, "
        f"{r['own_instance_pipeline_seconds']:.1f} s pipeline for "
        f"{r['own_instance_embedded']} images"
    )


def _print_corpus(r: dict[str, Any]) -> None:
    print(f"corpus: {r['files']} files, {r['megapixels']:g} MP JPEGs ({r['failed']} broken)")
    print(
        f"ingest: {r['images_per_s_command']:.1f} images/s end to end "
        f"({r['command_seconds']:.1f} s command), {r['images_per_s_pipeline']:.1f} images/s "
        f"in the pipeline; peak RSS {r['peak_rss_mb']:.0f} MB"
    )
    if "ceiling_images_per_s" in r:
        rates = ", ".join(f"{k} {v:.1f}" for k, v in r["ceiling_images_per_s"].items())
        print(f"model-only ceiling (images/s): {rates}")
        print(
            f"ratio to the fastest ceiling ({r['ceiling_best_runtime']}): "
            f"{r['ratio_to_ceiling_pipeline']:.2f} pipeline, "
            f"{r['ratio_to_ceiling_command']:.2f} end to end"
        )
    if "bound_images_per_s" in r:
        print(
            f"decoding alone: {r['decode_images_per_s']:.1f} images/s on all cores; bound "
            f"(perfect overlap with the fastest ceiling): {r['bound_images_per_s']:.1f} "
            f"images/s; ratio to it: {r['ratio_to_bound_pipeline']:.2f} pipeline, "
            f"{r['ratio_to_bound_command']:.2f} end to end"
        )
        print(
            f"CPU a photo: the command {r['cpu_ms_per_image']:.0f} ms, decoding alone "
            f"{r['decode_cpu_ms_per_image']:.0f} + the model alone "
            f"{r['model_cpu_ms_per_image']:.0f} = {r['bound_cpu_ms_per_image']:.0f} ms "
            f"(ratio {r['ratio_to_bound_cpu']:.2f}); cores busy {r['cores_busy']:.2f} "
            f"({r['idle_cores']:.2f} idle or taken by other work)"
        )
    print(
        f"unchanged re-run: {r['rerun_seconds']:.2f} s vs bare walk {r['walk_seconds']:.3f} s "
        f"= {r['rerun_over_walk']:.1f}x"
    )


def _print_tree(r: dict[str, Any]) -> None:
    print(
        f"tree of {r['files']} files: unchanged re-run {r['rerun_seconds']:.2f} s "
        f"(pipeline {r['rerun_pipeline_seconds']:.2f} s) vs bare walk "
        f"{r['walk_seconds']:.2f} s = {r['rerun_over_walk']:.1f}x "
        f"({r['rerun_pipeline_over_walk']:.1f}x pipeline only); "
        f"peak RSS {r['rerun_peak_rss_mb']:.0f} MB"
    )


if __name__ == "__main__":
    sys.exit(main())
