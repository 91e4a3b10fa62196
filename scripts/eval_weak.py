"""How often "nothing matches well" is right, on the toy world, through the product.

For each collection size, the toy world's 48 colour-and-shape objects are split into
groups; each group in turn is made absent (its photos left out; in small worlds more
objects are absent by chance, and count as absent too), the rest indexed with
the shipped ``toy`` model by ``Collection.index`` (which stores the calibration), and
every object queried as "a COLOUR SHAPE" with ``Collection.search``. A query whose best
result is marked weak is *flagged*. Reported: how often an absent object is flagged
(want high), a present one is flagged (want low), and queries from outside the toy
world ("a dog on a beach") are flagged.

    python scripts/eval_weak.py                  # sizes 60 and 360, seed 2024
    python scripts/eval_weak.py --n 1000 --seed 7 --groups 8
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
from pathlib import Path

from searchengine.collection import Collection
from searchengine.config import Config
from searchengine.toy import world

OFF_WORLD = (
    "a dog on a beach",
    "a red car at night",
    "kids building a sandcastle",
    "the eiffel tower",
    "a bowl of soup",
    "zebra",
    "mountains at sunset",
    "a birthday cake",
)


def evaluate(n: int, seed: int, groups: int, root: Path) -> dict[str, object]:
    """Flag rates for one world size (see the module docstring)."""
    items = world.generate(root / "world", n, seed)
    combos = [(c, s) for c in world.COLORS for s in world.SHAPES]
    random.Random(seed).shuffle(combos)
    parts = [combos[i::groups] for i in range(groups)]
    present_flags, absent_flags, off_flags, sizes = [], [], [], []
    for number, absent in enumerate(parts):
        folder = root / f"part{number}"
        folder.mkdir()
        shown: set[tuple[str, str]] = set()
        for item in items:
            objects = {(o.color, o.shape) for o in item.scene.objects}
            if objects & set(absent):
                continue
            shown |= objects
            target = folder / item.path.replace("/", "_")
            os.link(root / "world" / item.path, target)
        config = Config(home=root / "indexes", device="cpu")
        with Collection.open(f"part{number}", config, create=True, model="toy") as coll:
            coll.index([folder])
            sizes.append(len(coll.vectors()))
            for colour, shape in combos:
                best = coll.search(f"a {colour} {shape}", 1)[0]
                flags = present_flags if (colour, shape) in shown else absent_flags
                flags.append(bool(best.weak))
            off_flags += [bool(coll.search(q, 1)[0].weak) for q in OFF_WORLD]
    return {
        "world": n,
        "seed": seed,
        "collections": len(parts),
        "photos_per_collection": round(sum(sizes) / len(sizes)),
        "absent_queries": len(absent_flags),
        "absent_flagged": round(sum(absent_flags) / len(absent_flags), 3),
        "present_queries": len(present_flags),
        "present_flagged": round(sum(present_flags) / len(present_flags), 3),
        "off_world_queries": len(off_flags),
        "off_world_flagged": round(sum(off_flags) / len(off_flags), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[60, 360], help="world sizes")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--groups", type=int, default=6, help="collections per size")
    args = parser.parse_args()
    for n in args.n:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(evaluate(n, args.seed, args.groups, Path(tmp))), flush=True)


if __name__ == "__main__":
    main()
