"""SQLite against PostgreSQL catalogs, side by side in one run: open, warm search, index.

Same photos, same model (the shipped ``toy``), same machine, same run; the figures that
matter are the ratios (this machine is shared and noisy). Without ``--database-url`` a
throwaway PostgreSQL cluster is started (``tests/pgcluster.py``) and removed after.

- open: ``Collection.open`` + one catalog query in a fresh interpreter, after the
  package's own modules are imported (the driver's import and the connection count:
  what a one-shot ``searchengine search`` pays for its catalog), median of ``--repeat``.
- warm search: one text query in an open collection, median over 50.
- index: a first ``index`` of the photos (decode + embed + commit), then an unchanged
  re-run (scan + catalog read only).

Usage:
    python scripts/bench_catalog.py --images 2000
    python scripts/bench_catalog.py --database-url postgresql://me@127.0.0.1/bench --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OPEN_SNIPPET = """
import sys, time
from pathlib import Path
from searchengine import Collection, Config
from searchengine.collection import Collection
t = time.perf_counter()
home, url = Path(sys.argv[1]), sys.argv[2] or None
with Collection.open("bench", Config(home=home, database_url=url)) as c:
    c.catalog.ok_count()
print(time.perf_counter() - t)
"""


def measure(home: Path, photos: Path, url: str | None, repeat: int) -> dict[str, float]:
    from searchengine import Collection, Config

    config = Config(home=home, database_url=url, model="toy", device="cpu")
    figures: dict[str, float] = {}
    with Collection.open("bench", config, create=True, model="toy") as coll:
        started = time.perf_counter()
        figures["images"] = coll.index([photos]).added
        figures["index_s"] = time.perf_counter() - started
        started = time.perf_counter()
        coll.index([photos])
        figures["unchanged_rerun_s"] = time.perf_counter() - started
        coll.search("a red circle", k=10)  # warm: model and index loaded
        times = []
        for _ in range(50):
            started = time.perf_counter()
            coll.search("a red circle", k=10)
            times.append(time.perf_counter() - started)
        figures["warm_search_ms"] = statistics.median(times) * 1000
    opens = [
        float(
            subprocess.run(
                [sys.executable, "-c", OPEN_SNIPPET, str(home), url or ""],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        for _ in range(repeat)
    ]
    figures["open_ms"] = statistics.median(opens) * 1000
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5, help="cold opens to take the median of")
    parser.add_argument("--database-url", default=None, help="an empty PostgreSQL database")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from crash_harness import make_photos
    from pgcluster import database

    with database(args.database_url) as url, tempfile.TemporaryDirectory() as tmp:
        photos = Path(tmp) / "photos"
        make_photos(photos, args.images, seed=1)
        measure(Path(tmp) / "warm-up", photos, None, 1)  # one-time costs (model export)
        results = {
            "sqlite": measure(Path(tmp) / "sqlite", photos, None, args.repeat),
            "postgresql": measure(Path(tmp) / "pg", photos, url, args.repeat),
        }
    keys = ["open_ms", "warm_search_ms", "index_s", "unchanged_rerun_s"]
    ratios = {k: results["postgresql"][k] / results["sqlite"][k] for k in keys}
    if args.json:
        print(json.dumps({**results, "ratio_pg_to_sqlite": ratios}, indent=2))
        return
    print(f"{int(results['sqlite']['images'])} images, model toy, one run")
    print(f"{'figure':<20}{'SQLite':>12}{'PostgreSQL':>14}{'PG / SQLite':>14}")
    for key in keys:
        sq, pg = results["sqlite"][key], results["postgresql"][key]
        print(f"{key:<20}{sq:>12.2f}{pg:>14.2f}{ratios[key]:>14.2f}")


if __name__ == "__main__":
    main()
