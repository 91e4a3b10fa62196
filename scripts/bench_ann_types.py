#!/usr/bin/env python
"""ANN alternatives: recall@10 and search time of FAISS index types the engine does not pick.

``bench_query.py`` measures the index types the engine chooses. This script measures
others on the same synthetic vectors and held-out text-like queries, so the choice
can be checked: for each FAISS factory string in ``--types`` it trains and fills the
index, then sweeps its search breadth (``nprobe`` for IVF, ``efSearch`` for HNSW)
and prints recall@10 against exact search, single-query time (1 thread) and the
ratio to exact search in the same run, until recall reaches ``--stop-at``.

Examples:
    python scripts/bench_ann_types.py --size 100000
    python scripts/bench_ann_types.py --size 1000000 --centres 100000 \\
        --types "IVF1024,SQ8;IVF4096,SQ8;HNSW32,SQ8" --json ann-types.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench_query import synthetic

from searchengine import index_choice

BREADTHS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]


def file_bytes(faiss: Any, index: Any) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "i.faiss")
        faiss.write_index(index, path)
        return os.path.getsize(path)


def sweep(
    faiss: Any,
    factory: str,
    data: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
    exact_ms: float,
    args: argparse.Namespace,
) -> dict[str, Any]:
    n, dim = data.shape
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    faiss.omp_set_num_threads(args.threads)
    start = time.perf_counter()
    ivf = faiss.try_extract_index_ivf(index)  # None for HNSW
    if not index.is_trained:
        nlist = ivf.nlist if ivf is not None else 0
        size = min(n, max(nlist * index_choice.TRAIN_PER_LIST, 65_536))
        rng = np.random.default_rng(0)
        index.train(data[np.sort(rng.choice(n, size, replace=False))])
    train_s = time.perf_counter() - start
    for part in range(0, n, 100_000):
        index.add(data[part : part + 100_000])
    build_s = time.perf_counter() - start
    faiss.omp_set_num_threads(1)
    knob = "nprobe" if ivf is not None else "efSearch"
    limit = ivf.nlist if ivf is not None else BREADTHS[-1]
    params = faiss.ParameterSpace()
    rows = []
    for breadth in [b for b in BREADTHS if b <= limit]:
        params.set_index_parameter(index, knob, breadth)
        _, found = index.search(queries, index_choice.K)
        recall = index_choice.recall_at_k(found, truth)
        ms = index_choice.median_query_ms(index, queries[: args.timed])
        rows.append({knob: breadth, "recall_at_10": recall, "ms": ms})
        print(
            f"  {factory} {knob} {breadth}: recall@10 {recall:.3f}, {ms:.2f} ms/query "
            f"= {exact_ms / ms:.1f}x faster than exact",
            flush=True,
        )
        if recall >= args.stop_at or ms > exact_ms:
            break
    out = {
        "type": factory,
        "train_s": train_s,
        "build_s": build_s,
        "bytes_per_vector": file_bytes(faiss, index) / n,
        "sweep": rows,
    }
    print(
        f"  {factory}: built in {build_s:.0f} s (training {train_s:.0f} s), "
        f"{out['bytes_per_vector']:.0f} B/vector"
    )
    return out


def main(argv: list[str] | None = None) -> int:
    import faiss

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=100_000, help="vectors")
    parser.add_argument("--data", choices=["clustered", "uniform"], default="clustered")
    parser.add_argument("--centres", type=int, default=1000, help="clusters in the data")
    parser.add_argument("--types", default="IVF256,SQ8;IVF1024,SQ8;HNSW32,SQ8")
    parser.add_argument("--queries", type=int, default=200, help="held-out queries for recall")
    parser.add_argument("--timed", type=int, default=100, help="queries timed one by one")
    parser.add_argument("--stop-at", type=float, default=0.99, help="recall that ends a sweep")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="for building")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    dim = 512
    data = synthetic(args.size + args.queries, dim, args.data, seed=args.size, centres=args.centres)
    queries = index_choice.calibration_queries(data[args.size :], np.random.default_rng(12345))
    data = data[: args.size]
    exact = faiss.IndexFlatIP(dim)
    exact.add(data)
    _, truth = exact.search(queries, index_choice.K)
    faiss.omp_set_num_threads(1)
    exact_ms = index_choice.median_query_ms(exact, queries[:20])
    del exact
    label = args.data if args.data == "uniform" else f"clustered ({args.centres} centres)"
    print(f"{args.size} x {dim} ({label}): exact {exact_ms:.1f} ms/query")
    types = [f for f in args.types.split(";") if f]
    results: dict[str, Any] = {
        "vectors": args.size,
        "data": label,
        "exact_ms": exact_ms,
        "types": [sweep(faiss, f, data, queries, truth, exact_ms, args) for f in types],
    }
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
