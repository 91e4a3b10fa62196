"""What the folder walk of an unchanged re-run costs, with and without --exclude patterns,
and read as on a network share (on a thread the walk can leave, ``ingest/reading.py``).

Builds a tree of empty ``.jpg`` files (``--files`` in folders of 100, two levels deep;
the walk reads names and stat results only, so empty files cost the same as photos)
and times ``scan`` over it in alternating rounds, as CPU seconds; prints each case's
median and its ratio to the walk without patterns, measured in the same run.

    python scripts/bench_walk.py                    # 100,000 files
    python scripts/bench_walk.py --files 20000 --rounds 5 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from searchengine.ingest.exclude import Exclusions
from searchengine.ingest.mounts import MountTable
from searchengine.ingest.scan import scan

WATCHED = "no patterns, as on a share"  # every folder read as on a network share
CASES = {
    "no patterns": (),
    WATCHED: (),
    "3 names": ("Raw", "*.tif", "*-edited.jpg"),
    "3 patterns": ("Raw", "*.tif", "2019/private"),
    "3 patterns + an absolute one": ("Raw", "*.tif", "2019/private", "/mnt/old/backup"),
}


def build(root: Path, files: int) -> None:
    for n in range(files):
        folder = root / f"y{n // 10_000}" / f"d{n // 100}"
        if n % 100 == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"IMG_{n % 100:04d}.jpg").touch()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="walk") as tmp:
        root = Path(tmp)
        build(root, args.files)
        seconds: dict[str, list[float]] = {name: [] for name in CASES}
        for _ in range(args.rounds):
            for name, patterns in CASES.items():
                exclusions = Exclusions(patterns)
                # A mount table that could not be read: every folder counts as remote.
                table = MountTable(known=False) if name == WATCHED else None
                started = time.process_time()
                found = sum(1 for _ in scan([root], exclusions=exclusions, mounts=table))
                seconds[name].append(time.process_time() - started)
                assert found == args.files, (name, found)
    base = statistics.median(seconds["no patterns"])
    result = {
        name: {"median_s": statistics.median(s), "min_s": min(s),
               "ratio": statistics.median(s) / base}
        for name, s in seconds.items()
    }  # fmt: skip
    if args.json:
        print(json.dumps({"files": args.files, "rounds": args.rounds, "cases": result}, indent=2))
        return
    print(f"walk of {args.files:,} files, {args.rounds} alternating rounds, CPU seconds:")
    for name, r in result.items():
        print(f"  {name:30s} median {r['median_s']:.3f}  min {r['min_s']:.3f}  x{r['ratio']:.2f}")


if __name__ == "__main__":
    main()
