#!/usr/bin/env python
"""Query benchmark: cold CLI query, warm API query, and ANN indexes at 100k / 1M vectors.

1. Cold: ``searchengine search`` in a fresh process (start to printed results) on a
   collection of ``--images`` photos, for ``--runtime`` auto (ONNX, no torch) and
   torch, so their ratio is measured in one run; ``python -c pass`` for scale.
2. Warm: ``Collection.search`` through the Python API, repeated; with its parts
   (text encoding, vector search).
3. ANN: synthetic 512-d unit vectors at each ``--sizes`` count, clustered around a
   shared direction like CLIP image embeddings (``--data uniform`` for the worst
   case). For exact search and for each index type the engine chooses (by size, and
   under a memory budget of ``--budget-bytes`` per vector): build time, single-query
   search time, recall@10 against exact search on held-out text-like queries (seed
   vectors pushed off the data manifold, cosine ~0.5), bytes per vector on disk.
4. End to end at 1M: the warm API query with its vector search replaced by the 1M
   ANN search time (composed from 2 and 3, said so in the output).

Examples:
    python scripts/bench_query.py                                 # 300 images, 100k vectors
    python scripts/bench_query.py --sizes 100000,1000000 --json query.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ingest import compile_package, default_model, run
from make_bench_corpus import make_corpus

EXE = str(Path(sys.executable).with_name("searchengine"))
QUERIES = [
    "kids building a sandcastle",
    "a red car at night",
    "a dog running on the beach",
    "birthday cake with candles",
    "snowy mountains at sunrise",
    "a cat sleeping on a sofa",
]


def ms(values: list[float]) -> dict[str, float]:
    return {
        "median_ms": statistics.median(values) * 1000,
        "min_ms": min(values) * 1000,
        "runs": len(values),
    }


def build_collection(args: argparse.Namespace, model: str) -> Path:
    corpus = args.work / f"query-corpus-{args.images}"
    make_corpus(corpus, args.images, megapixels=0.3, broken=False)
    home = args.work / "query-idx"
    run([EXE, "index", str(corpus), "--index-dir", str(home), "-m", model, "--json"])
    return home


def cold(home: Path, runtime: str, repeat: int) -> dict[str, Any]:
    """Fresh-process searches; one untimed run first puts the files in the page cache."""
    run([EXE, "search", "warm-up", "--index-dir", str(home), "--runtime", runtime])
    times, rss = [], 0.0
    for i in range(repeat):
        query = QUERIES[i % len(QUERIES)]
        cmd = [EXE, "search", query, "--index-dir", str(home), "--runtime", runtime]
        done = run(cmd)
        assert len(done["stdout"].strip().splitlines()) == 10, done["stdout"]
        times.append(done["seconds"])
        rss = max(rss, done["peak_rss_mb"])
    return {**ms(times), "peak_rss_mb": rss}


def warm(home: Path, repeat: int) -> dict[str, Any]:
    from searchengine import Collection, Config

    config = Config.from_env(home=home)
    with Collection.open("default", config) as coll:
        coll.search(QUERIES[0])  # load the model and the index
        total, encode, vector = [], [], []
        for i in range(repeat):
            query = QUERIES[i % len(QUERIES)]
            start = time.perf_counter()
            coll.search(query, k=10)
            total.append(time.perf_counter() - start)
            start = time.perf_counter()
            q = coll.encoder.encode_texts([query])
            encode.append(time.perf_counter() - start)
            start = time.perf_counter()
            coll.vectors().search(q, 10)
            vector.append(time.perf_counter() - start)
        runtime = getattr(coll.encoder, "runtime", "torch")
        images = len(coll.vectors())
    return {
        "search": ms(total),
        "encode_one_text": ms(encode),
        "vector_search": ms(vector),
        "runtime": runtime,
        "images": images,
    }


def synthetic(n: int, dim: int, kind: str, seed: int, centres: int = 1000) -> np.ndarray:
    """Unit vectors: clustered around a shared direction (CLIP-like), or uniform."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    if kind == "clustered":
        mean = rng.standard_normal(dim).astype(np.float32)
        mean /= np.linalg.norm(mean)
        centre = rng.standard_normal((centres, dim)).astype(np.float32)
        centre = 0.6 * mean + 0.8 * centre / np.linalg.norm(centre, axis=1, keepdims=True)
    for start in range(0, n, 100_000):  # chunked: 1M x 512 never doubles in memory
        rows = min(100_000, n - start)
        noise = rng.standard_normal((rows, dim)).astype(np.float32)
        if kind == "clustered":
            part = centre[rng.integers(0, centres, rows)] + 0.7 * noise / np.sqrt(dim)
        else:
            part = noise
        out[start : start + rows] = part / np.linalg.norm(part, axis=1, keepdims=True)
    return out


def ann(n: int, args: argparse.Namespace) -> dict[str, Any]:
    from searchengine import index_choice
    from searchengine.vectors import FaissIndex

    dim = 512
    data = synthetic(n + args.queries, dim, args.data, seed=n, centres=args.centres)
    rng = np.random.default_rng(12345)
    queries = index_choice.calibration_queries(data[n:], rng)
    flat = FaissIndex(dim)
    start = time.perf_counter()
    flat.add(np.arange(1, n + 1), data[:n])
    exact_build = time.perf_counter() - start
    del data
    _, truth = flat.search(queries, 10)
    exact_times = index_choice.single_query_times(flat, queries[: args.exact_queries])
    out: dict[str, Any] = {
        "vectors": n,
        "dim": dim,
        "data": args.data if args.data == "uniform" else f"clustered ({args.centres} centres)",
        "queries": len(queries),
        "exact": {
            **ms(exact_times),
            "build_s": exact_build,
            "bytes_per_vector": _file_bytes(flat) / n,
        },
    }
    types = {"chosen": index_choice.choose_index(n, dim)}
    budget_mb = args.budget_bytes * n / 2**20
    types["budget"] = index_choice.choose_index(n, dim, memory_mb=budget_mb)
    for label, index_type in types.items():
        if index_type == "Flat":
            out[label] = {"index_type": "Flat", "same_as": "exact"}
            continue
        start = time.perf_counter()
        memory_mb = budget_mb if label == "budget" else None
        built, report = index_choice.build_index(flat, index_type, memory_mb=memory_mb)
        build_s = time.perf_counter() - start
        times = index_choice.single_query_times(built, queries)
        _, found = built.search(queries, 10)
        out[label] = {
            "index_type": index_type,
            "build_s": build_s,
            "nprobe": report.nprobe,
            "calibration_recall_at_10": report.recall_at_10,
            "recall_at_10": index_choice.recall_at_k(found, truth),
            **ms(times),
            "speedup_vs_exact": statistics.median(exact_times) / statistics.median(times),
            "bytes_per_vector": _file_bytes(built) / n,
            "bytes_per_vector_in_memory_est": index_choice.bytes_per_vector(index_type, dim)
            + (index_choice.accelerator_bytes(dim) if report.accelerator else 0),
            "accelerator": report.accelerator,
            "accelerator_nprobe": report.accelerator_nprobe,
            "accelerator_refine_factor": report.accelerator_refine_factor,
            "calibration_ms_sq8_alone": report.query_ms,
            "calibration_ms_accelerated": report.accelerated_query_ms,
        }
        if label == "budget":
            out[label]["budget_bytes_per_vector"] = args.budget_bytes
        del built
    return out


def _file_bytes(index: Any) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "v.faiss"
        index.save(path)
        return path.stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=300, help="photos in the query collection")
    parser.add_argument("--model", default=None)
    parser.add_argument("--repeat", type=int, default=5, help="cold query runs per runtime")
    parser.add_argument("--warm-repeat", type=int, default=30)
    parser.add_argument("--sizes", default="100000", help="ANN sizes, comma-separated ('' skips)")
    parser.add_argument("--data", choices=["clustered", "uniform"], default="clustered")
    parser.add_argument("--centres", type=int, default=1000, help="clusters in the data")
    parser.add_argument("--queries", type=int, default=200, help="ANN held-out queries")
    parser.add_argument("--exact-queries", type=int, default=50)
    parser.add_argument("--budget-bytes", type=float, default=100.0)
    parser.add_argument("--skip-cli", action="store_true", help="only the ANN part")
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "searchengine-bench")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    compile_package()
    results: dict[str, Any] = {"cpus": os.cpu_count(), "argv": sys.argv[1:]}

    if not args.skip_cli:
        model, note = (args.model, args.model) if args.model else default_model(args.work)
        print(f"model: {note}")
        results["model"] = note
        from searchengine.models import load_encoder

        load_encoder(model, "cpu", "auto").close()  # the one-time ONNX export, untimed
        home = build_collection(args, model)
        baseline = [run([sys.executable, "-c", "pass"])["seconds"] for _ in range(3)]
        results["python_startup"] = ms(baseline)
        results["cold"] = {r: cold(home, r, args.repeat) for r in ("auto", "torch")}
        results["cold"]["torch_over_auto"] = (
            results["cold"]["torch"]["median_ms"] / results["cold"]["auto"]["median_ms"]
        )
        results["warm"] = warm(home, args.warm_repeat)
        c, w = results["cold"], results["warm"]
        print(
            f"cold CLI query ({args.images} images): auto {c['auto']['median_ms']:.0f} ms "
            f"(min {c['auto']['min_ms']:.0f}), torch {c['torch']['median_ms']:.0f} ms = "
            f"{c['torch_over_auto']:.1f}x; python -c pass "
            f"{results['python_startup']['median_ms']:.0f} ms; "
            f"peak RSS {c['auto']['peak_rss_mb']:.0f} MB"
        )
        print(
            f"warm API query ({w['runtime']}): {w['search']['median_ms']:.1f} ms "
            f"(text encoding {w['encode_one_text']['median_ms']:.1f} ms, "
            f"vector search {w['vector_search']['median_ms']:.2f} ms)"
        )
    results["ann"] = []
    for size in [int(s) for s in args.sizes.split(",") if s.strip()]:
        result = ann(size, args)
        results["ann"].append(result)
        _print_ann(result)
        if "warm" in results and "chosen" in result and "median_ms" in result["chosen"]:
            w = results["warm"]
            composed = (
                w["search"]["median_ms"]
                - w["vector_search"]["median_ms"]
                + result["chosen"]["median_ms"]
            )
            result["composed_end_to_end_ms"] = composed
            print(
                f"  end to end at {size} (composed: warm query, {size} search): {composed:.1f} ms"
            )
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def _print_ann(r: dict[str, Any]) -> None:
    e = r["exact"]
    print(
        f"{r['vectors']} x {r['dim']} ({r['data']}): exact {e['median_ms']:.1f} ms/query, "
        f"{e['bytes_per_vector']:.0f} B/vector"
    )
    for label in ("chosen", "budget"):
        x = r[label]
        if "median_ms" not in x:
            print(f"  {label}: {x['index_type']} (exact)")
            continue
        print(
            f"  {label}: {x['index_type']} nprobe {x['nprobe']}: recall@10 {x['recall_at_10']:.3f} "
            f"(calibration {x['calibration_recall_at_10']:.3f}), {x['median_ms']:.2f} ms/query "
            f"= {x['speedup_vs_exact']:.0f}x faster than exact, "
            f"{x['bytes_per_vector']:.0f} B/vector, built in {x['build_s']:.0f} s"
        )
        if x.get("calibration_ms_accelerated") is not None:
            kept = (
                f"kept, nprobe {x['accelerator_nprobe']}, "
                f"{x['accelerator_refine_factor']} candidates a result"
                if x["accelerator"]
                else "not kept"
            )
            print(
                f"    fast-scan accelerator {kept}: calibration query "
                f"{x['calibration_ms_sq8_alone']:.2f} ms SQ8 alone, "
                f"{x['calibration_ms_accelerated']:.2f} ms accelerated"
            )


if __name__ == "__main__":
    sys.exit(main())
