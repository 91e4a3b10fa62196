#!/usr/bin/env python
"""A reader's refresh under a shared catalog: catching a copy of its index up, against
catching the index itself up.

A web server (or any long-lived reader) on a host of a shared collection notices the
batches other hosts commit and brings its in-memory index up to them before the next
query (``Store.refresh``). It used to clone the whole index, catch the clone up and
swap it in, so that a query still running kept the old one: each refresh held the index
twice and paid a full copy, however small the batch. It now catches the index up in
place, under the lock every query holds while it reads the index.

This measures, on ``--size`` synthetic CLIP-like 512-d vectors in the index type a
collection of that size gets (``IVF…,SQ8`` past 50k vectors): what one refresh of a
``--batch``-vector batch costs each way, wall time and the growth of the process's
resident memory (the first of each way; later copies reuse memory the allocator kept
from the ones before, and even the first may reuse what the build freed: the index's
own size, printed first, is what a copy holds a second time), and the time the
median of ``--rounds``.

Examples:
    python scripts/bench_refresh.py --size 200000
    python scripts/bench_refresh.py --size 1000000 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

DIM = 512


def rss_mb() -> float:
    """The process's resident memory now, MB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=200_000, help="vectors in the index")
    parser.add_argument("--batch", type=int, default=32, help="vectors a refresh brings")
    parser.add_argument("--rounds", type=int, default=5, help="refreshes each way")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    say = (lambda *_: None) if args.json else print

    from bench_query import synthetic

    from searchengine.index_choice import build_index, choose_index
    from searchengine.vectors import FaissIndex

    vectors = synthetic(args.size + args.rounds * 2 * args.batch, DIM, "clustered", seed=7)
    base = vectors[: args.size]
    exact = FaissIndex(DIM)
    exact.add(np.arange(1, args.size + 1, dtype=np.int64), base)
    index_type = choose_index(args.size, DIM)
    started = time.perf_counter()
    index, _ = build_index(exact, index_type)
    del exact
    built = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as folder:
        index.save(Path(folder) / "vectors.faiss")
        size_mb = (Path(folder) / "vectors.faiss").stat().st_size / 2**20
    say(f"{args.size:,} vectors as {index.index_type}: {size_mb:.0f} MB, built in {built:.1f} s")

    next_id = args.size + 1
    copied: list[tuple[float, float]] = []
    in_place: list[tuple[float, float]] = []
    for _ in range(args.rounds):
        for way in ("copy", "in place"):
            ids = np.arange(next_id, next_id + args.batch, dtype=np.int64)
            batch = vectors[next_id - 1 : next_id - 1 + args.batch]
            next_id += args.batch
            before = rss_mb()
            start = time.perf_counter()
            target = index.copy() if way == "copy" else index
            target.remove(ids[:1] - args.size)  # a photo deleted on the other host
            target.add(ids, batch)
            seconds = time.perf_counter() - start
            grown = rss_mb() - before
            if way == "copy":
                index = target  # swapped in; the old one goes
                copied.append((seconds, grown))
            else:
                in_place.append((seconds, grown))
            del target

    def ms(rows: list[tuple[float, float]]) -> float:
        return 1000 * statistics.median(r[0] for r in rows)

    say(f"one refresh of {args.batch} vectors (time: median of {args.rounds}):")
    for name, rows in (("a copy caught up", copied), ("in place", in_place)):
        say(f"  {name:17} {ms(rows):8.1f} ms, +{rows[0][1]:7.1f} MB resident")
    say(f"  in place over a copy: {ms(in_place) / ms(copied):.3f} of the time")
    if args.json:
        ways = {"copy": copied, "in_place": in_place}
        figures = {
            way: {"median_ms": ms(rows), "first_rss_mb": rows[0][1]} for way, rows in ways.items()
        }
        print(
            json.dumps(
                {
                    "size": args.size,
                    "index_type": index.index_type,
                    "index_mb": size_mb,
                    "batch": args.batch,
                    "rounds": args.rounds,
                    "vectors_after": len(index),
                    **figures,
                    "in_place_to_copy": ms(in_place) / ms(copied),
                }
            )
        )


if __name__ == "__main__":
    main()
