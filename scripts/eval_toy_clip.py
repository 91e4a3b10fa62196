"""Held-out retrieval evaluation of the toy CLIP models.

Usage::

    python scripts/eval_toy_clip.py                      # toy and toy-large, 1000 images
    python scripts/eval_toy_clip.py --json --n 2000 toy-large

Generates a held-out toy world with a seed never used in training (written as image files
through ``searchengine.toy.world.generate``), loads each model exactly as the package does
(``open_clip.create_model_and_transforms("local-dir:DIR")``), reads every image back from
disk, and reports recall at 1, 5 and 10 with the CLIP_benchmark definitions:

- text->image: one query per caption; a hit when its image is among the top K images.
- image->text: one query per image; a hit when any of its captions is among the top K.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import open_clip
import torch
from PIL import Image

from searchengine.models.spec import SHIPPED_MODELS, shipped_model_dir
from searchengine.toy import world as toyworld

KS = (1, 5, 10)
HELD_OUT_SEED = 1000  # training uses seed 1 and its quick check 999


def model_dir(name: str) -> Path:
    """A shipped model name (``toy``, ``toy-large``) or a model folder."""
    return shipped_model_dir(name) if name in SHIPPED_MODELS else Path(name).resolve()


@torch.no_grad()
def embed(
    folder: Path, root: Path, items: Sequence[toyworld.ToyItem], batch_size: int
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """L2-normalised image and caption embeddings, and each caption's image index."""
    name = f"local-dir:{folder}"
    model, _, preprocess = open_clip.create_model_and_transforms(name)
    model.eval()
    tokenizer = open_clip.get_tokenizer(name)
    image_parts = []
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        pixels = [preprocess(Image.open(root / item.path).convert("RGB")) for item in batch]
        image_parts.append(model.encode_image(torch.stack(pixels), normalize=True))
    captions = [(i, text) for i, item in enumerate(items) for text in item.captions]
    text_parts = [
        model.encode_text(tokenizer([t for _, t in captions[s : s + batch_size]]), normalize=True)
        for s in range(0, len(captions), batch_size)
    ]
    return torch.cat(image_parts), torch.cat(text_parts), [i for i, _ in captions]


def recalls(
    image_features: torch.Tensor, text_features: torch.Tensor, text_to_image: Sequence[int]
) -> dict[str, float]:
    """Text->image and image->text recall at each K in ``KS``."""
    similarity = text_features @ image_features.T  # [captions, images]
    owner = torch.tensor(text_to_image)
    top_images = similarity.topk(max(KS), dim=1).indices  # [captions, K]
    top_texts = similarity.T.topk(max(KS), dim=1).indices  # [images, K]
    own_image = top_images == owner[:, None]
    own_text = owner[top_texts] == torch.arange(len(image_features))[:, None]
    scores = {}
    for k in KS:
        scores[f"t2i_R@{k}"] = own_image[:, :k].any(dim=1).float().mean().item()
        scores[f"i2t_R@{k}"] = own_text[:, :k].any(dim=1).float().mean().item()
    return scores


def markdown(results: dict[str, dict[str, float]]) -> str:
    """Results as a markdown table, one row per model, in percent."""
    columns = [f"t2i_R@{k}" for k in KS] + [f"i2t_R@{k}" for k in KS]
    header = "| model | " + " | ".join(c.replace("_", " ") for c in columns) + " |"
    rule = "|---|" + "---:|" * len(columns)
    rows = [
        f"| {name} | " + " | ".join(f"{100 * scores[c]:.1f}" for c in columns) + " |"
        for name, scores in results.items()
    ]
    return "\n".join([header, rule, *rows])


def main(argv: Sequence[str] | None = None) -> int:
    """Evaluate each model named on the command line and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "models",
        nargs="*",
        default=list(SHIPPED_MODELS),
        help="shipped model names or model folders (default: both toys)",
    )
    parser.add_argument("--n", type=int, default=1000, help="held-out images")
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED, help="held-out world seed")
    parser.add_argument("--data-dir", type=Path, help="write the images here (default: temp)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="toy-eval-") as scratch:
        root = args.data_dir or Path(scratch)
        items = toyworld.generate(root, args.n, args.seed)
        results = {}
        for name in args.models:
            started = time.monotonic()
            features = embed(model_dir(name), root, items, args.batch_size)
            results[name] = recalls(*features)
            print(f"{name}: {time.monotonic() - started:.1f}s", file=sys.stderr)
    if args.json:
        print(json.dumps({"n": args.n, "seed": args.seed, "results": results}, indent=2))
    else:
        print(f"held-out toy world: {args.n} images, seed {args.seed}\n")
        print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
