"""First stage alone vs reranked with CLIPScore, through the product, on a held-out toy world.

Usage::

    python scripts/eval_toy_rerank.py                     # 1000 images, seed 1000
    python scripts/eval_toy_rerank.py --n 300 --seed 4343 --candidates 20 --json

Generates the world (``searchengine.toy.world.generate``), indexes it with ``--first``
and precomputes ``--reranker`` vectors (``Collection.index`` + ``precompute``: the same
code as ``searchengine index -m toy -m toy-large``), then asks every image's first
caption through ``Collection.search``: once as is, once with ``rerank=`` the reranker
(CLIPScore, "A photo depicts " prefix) over ``--candidates`` first-stage candidates.
Prints text->image R@1 and R@5 of both.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from searchengine import Collection, Config
from searchengine.toy import world as toyworld


def evaluate(
    root: Path, n: int, seed: int, first: str, reranker: str, candidates: int
) -> dict[str, object]:
    """Index a fresh toy world under ``root`` and measure both rankings."""
    items = toyworld.generate(root / "photos", n, seed)
    queries = [(item.captions[0], os.path.abspath(root / "photos" / item.path)) for item in items]
    config = Config(home=root / "idx", model=first, device="cpu")
    with Collection.open("toy", config, create=True) as collection:
        collection.index([root / "photos"])
        collection.precompute(reranker)
        out: dict[str, object] = {"images": n, "seed": seed, "candidates": candidates}
        for name, rerank in (("first_stage", None), ("reranked", reranker)):
            started = time.perf_counter()
            ranks = []
            for caption, path in queries:
                found = collection.search(caption, k=5, rerank=rerank, candidates=candidates)
                paths = [r.path for r in found]
                ranks.append(paths.index(path) + 1 if path in paths else None)
            out[name] = {
                "r_at_1": sum(r == 1 for r in ranks) / len(ranks),
                "r_at_5": sum(r is not None for r in ranks) / len(ranks),
                "ms_per_query": 1000 * (time.perf_counter() - started) / len(ranks),
            }
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="held-out images")
    parser.add_argument("--seed", type=int, default=1000, help="held-out world seed")
    parser.add_argument("--first", default="toy", help="first-stage model")
    parser.add_argument("--reranker", default="toy-large", help="CLIPScore model")
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="toy-rerank-") as tmp:
        result = evaluate(Path(tmp), args.n, args.seed, args.first, args.reranker, args.candidates)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"held-out toy world: {args.n} images, seed {args.seed}, {args.candidates} candidates")
    for name, label in (("first_stage", args.first), ("reranked", f"+ {args.reranker}")):
        r = result[name]
        assert isinstance(r, dict)
        print(f"{label:>12}: t2i R@1 {100 * r['r_at_1']:.1f}  R@5 {100 * r['r_at_5']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
