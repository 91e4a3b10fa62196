#!/usr/bin/env python
"""A new host's first index from a shared (PostgreSQL) catalog: memory, time and recall.

A team's collection lives in one PostgreSQL catalog that logs every vector; each host
keeps its own index file. A host without one (a new machine, a web server) builds it
from the log. Three ways, each in a fresh interpreter, alternating, ``--rounds`` rounds:

- ``recorded``: what a writer (``index``) on such a host does now: the collection's
  recorded type (``IVF…,SQ8`` past 50k vectors) trained on a sample read by id and
  filled from the streamed log (``logged_vectors.LoggedVectors``), then saved;
- ``replay``: the route it replaces: every logged vector replayed into an exact index,
  then rebuilt as the recorded type (``index_choice.build_index``), then saved;
- ``exact``: every logged vector replayed into an exact index in memory: what a reader
  (``search``, ``serve``) on such a host does up to ``IndexPolicy.reader_exact_max``
  vectors (1M), and did at any size before. Past that a reader builds as ``recorded``
  does, without the save.

Printed per way: peak RSS of the process (``VmHWM``), wall time, the index type
built, its file size, and recall@10 against exact search on 256 text-like queries
(``index_choice.calibration_queries``, the same the build tunes ``nprobe`` with, from
a different seed). The ratios ``recorded / replay`` and ``recorded / exact`` are taken
within the run.

The catalog is filled once with ``--size`` synthetic 512-d CLIP-like vectors
(``bench_query.synthetic``) by a first host that indexes them exact and rebuilds at
the end, as ``index`` does. Without ``--database-url`` a throwaway PostgreSQL cluster is
started (``tests/pgcluster.py``) and removed after.

Examples:
    python scripts/bench_catchup.py --size 200000
    python scripts/bench_catchup.py --size 5000 --flat-max 4096 --rounds 1   # a quick try
    python scripts/bench_catchup.py --id-work 10000000   # the id bookkeeping alone
    python scripts/bench_catchup.py --size 1000000 --rounds 1 --json catchup.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

DIM = 512
NAME = "bench"
WAYS = ("recorded", "replay", "exact")

# The start of each child: VmHWM is the process's own peak (ru_maxrss keeps the
# forking parent's).
PEAK_RSS = """
import json, sys, time
from pathlib import Path
import numpy as np


def peak_rss_mb():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

"""

# One host's build, in a fresh interpreter: argv = way, home, url.
CHILD = (
    PEAK_RSS
    + """
from searchengine import Collection, Config
from searchengine.index_choice import build_index, recall_at_k
from searchengine.logged_vectors import LoggedVectors
from searchengine.values import MetaKey
from searchengine.vectors import FaissIndex

way, home, url, truth_file = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4]
started = time.perf_counter()
with Collection.open("bench", Config(home=home, database_url=url)) as coll:
    store = coll.store
    if way == "recorded":
        with store.writing():  # builds this host's index from the log and saves it
            pass
        index = store.vectors()
    else:  # the route before: every vector exact, then (a writer) rebuilt as recorded
        index = FaissIndex(store.dim)
        source = LoggedVectors(store.catalog, store.dim, store.catalog.ok_id_array())
        for ids, vectors in source.chunks():
            index.add(ids, vectors)
        if way == "replay":
            index, _ = build_index(index, store.catalog.get_meta(MetaKey.INDEX_TYPE))
            home.joinpath("bench").mkdir(parents=True, exist_ok=True)
            index.save(store.index_path)
    seconds = time.perf_counter() - started
    peak = peak_rss_mb()
    saved = store.index_path.exists()
    truth = np.load(truth_file)
    _, found = index.search(truth["queries"], 10)
    print(json.dumps({
        "seconds": seconds,
        "peak_rss_mb": peak,
        "index_type": index.index_type,
        "vectors": len(index),
        "file_mb": store.index_path.stat().st_size / 2**20 if saved else 0.0,
        "recall_at_10": recall_at_k(found, truth["ids"]),
    }))
"""
)


def fill_catalog(home: Path, url: str, data: np.ndarray, flat_max: int) -> str:
    """The first host: rows and vectors through ingest batches, then the end-of-run
    rebuild that records the collection's type. Returns that type."""
    from searchengine import Collection, Config
    from searchengine.index_choice import IndexPolicy
    from searchengine.models.fake import FakeEncoder
    from searchengine.values import OK

    encoder = FakeEncoder()
    encoder.dim = DIM
    config = Config(home=home, database_url=url, index_policy=IndexPolicy(flat_max=flat_max))
    with Collection.open(NAME, config, create=True, encoder=encoder) as coll:
        store = coll.store
        store.claim_dim(DIM, "synthetic")
        with store.writing():
            for start in range(0, len(data), 5_000):
                with store.batch() as batch:
                    for no in range(start, min(start + 5_000, len(data))):
                        row = {"path": f"/photos/{no:08d}.jpg", "size": 1, "mtime_ns": 1}
                        batch.put(None, {**row, "status": OK}, data[no])
            store.checkpoint()
            store.adapt(store.policy)
        return store.index_type()


# The id bookkeeping of a catch-up, in a fresh interpreter: argv = way, ids. The catalog
# has ok ids 1..N (its driver yields Python ints); the index holds, in another order, all
# but the first 1 % of them and 1 % of ids whose rows are gone.
ID_WORK = (
    PEAK_RSS
    + """
from searchengine.catalog import members

way, n = sys.argv[1], int(sys.argv[2])
held = np.arange(n // 100 + 1, n + n // 100 + 1, dtype=np.int64)
held = np.random.default_rng(0).permutation(held)
rows = list(range(1, n + 1))
base, started = peak_rss_mb(), time.perf_counter()
if way == "sets":  # the code before: a set of the ok ids, Python loops over the index's
    ok = set(rows)
    orphans = [int(i) for i in held if int(i) not in ok]
    missing = ok - set(int(i) for i in held)
else:  # now: arrays, NumPy's membership
    ok = np.sort(np.fromiter(iter(rows), dtype=np.int64))
    orphans = held[~members(held, ok)]
    missing = ok[~members(ok, held)]
seconds, added = time.perf_counter() - started, peak_rss_mb() - base
print(json.dumps({"seconds": seconds, "added_peak_rss_mb": added,
                  "orphans": sorted(int(i) for i in orphans)[:3] + [len(orphans)],
                  "missing": sorted(int(i) for i in missing)[:3] + [len(missing)]}))
"""
)


def id_work(ids: int) -> dict[str, dict[str, Any]]:
    """Seconds and added peak RSS of a catch-up's id bookkeeping, sets against arrays,
    with what each found (the first three orphans and missing ids, then the counts)."""
    figures = {}
    for way in ("sets", "arrays"):
        done = subprocess.run(
            [sys.executable, "-c", ID_WORK, way, str(ids)], capture_output=True, text=True
        )
        if done.returncode:
            raise SystemExit(f"the {way} id work failed:\n{done.stderr[-3000:]}")
        figures[way] = json.loads(done.stdout)
    if {k: figures["sets"][k] for k in ("orphans", "missing")} != {
        k: figures["arrays"][k] for k in ("orphans", "missing")
    }:
        raise SystemExit(f"the two ways disagree: {figures}")
    return figures


def run_way(way: str, home: Path, url: str, truth: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, way, str(home), url, str(truth)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"the {way} build failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=200_000, help="vectors in the catalog")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds")
    parser.add_argument("--database-url", default=None, help="an empty PostgreSQL database")
    parser.add_argument(
        "--flat-max",
        type=int,
        default=50_000,
        help="exact search below this many vectors (the product's 50,000; lower it to try "
        "a few thousand vectors)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--id-work",
        type=int,
        default=None,
        metavar="IDS",
        help="instead: time a catch-up's id bookkeeping for this many ids, the Python sets "
        "it used against the arrays it uses (no database)",
    )
    args = parser.parse_args(argv)
    if args.id_work:
        work = id_work(args.id_work)
        for way, f in work.items():
            print(f"{way:<7} {args.id_work:,} ids: {f['seconds']:.2f} s, "
                  f"+{f['added_peak_rss_mb']:.0f} MB peak RSS")  # fmt: skip
        if args.json:
            args.json.write_text(json.dumps({"ids": args.id_work, **work}, indent=2))
        return 0

    from bench_query import synthetic
    from pgcluster import database

    from searchengine.index_choice import calibration_queries

    with database(args.database_url) as url, tempfile.TemporaryDirectory() as tmp:
        data = synthetic(
            args.size + 256, DIM, "clustered", seed=7, centres=max(100, args.size // 10)
        )
        queries = calibration_queries(data[args.size :], np.random.default_rng(99))
        data = data[: args.size]
        started = time.perf_counter()
        recorded = fill_catalog(Path(tmp) / "first", url, data, args.flat_max)
        fill_s = time.perf_counter() - started
        top = np.argsort(-(queries @ data.T), axis=1)[:, :10]
        truth = Path(tmp) / "truth.npz"  # the first host's rows are ids 1..N in order
        np.savez(truth, queries=queries, ids=top + 1)
        del data
        runs: dict[str, list[dict[str, Any]]] = {way: [] for way in WAYS}
        for round_no in range(args.rounds):
            for way in WAYS if round_no % 2 == 0 else WAYS[::-1]:
                home = Path(tmp) / f"{way}-{round_no}"
                runs[way].append(run_way(way, home, url, truth))
    best = {way: min(runs[way], key=lambda f: f["seconds"]) for way in WAYS}
    peak = {way: min(f["peak_rss_mb"] for f in runs[way]) for way in WAYS}
    result = {
        "size": args.size,
        "dim": DIM,
        "recorded_type": recorded,
        "fill_catalog_s": round(fill_s, 1),
        "runs": runs,
        "ratios": {
            f"{new}_to_{old}": {
                "peak_rss": peak[new] / peak[old],
                "seconds": best[new]["seconds"] / best[old]["seconds"],
            }
            for new, old in (("recorded", "replay"), ("recorded", "exact"))
        },
    }
    print(f"{args.size:,} vectors of {DIM}-d in a PostgreSQL catalog, recorded type {recorded}")
    print(f"{'way':<14}{'peak RSS, MB':>14}{'seconds':>10}{'index':>14}{'file, MB':>10}{'R@10':>7}")
    for way in WAYS:
        f = best[way]
        print(
            f"{way:<14}{peak[way]:>14.0f}{f['seconds']:>10.1f}{f['index_type']:>14}"
            f"{f['file_mb']:>10.0f}{f['recall_at_10']:>7.3f}"
        )
    for pair, ratio in result["ratios"].items():
        new, old = pair.split("_to_")
        print(f"{new} / {old}: peak RSS {ratio['peak_rss']:.2f}x, time {ratio['seconds']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
