"""Write a captioned toy-world photo folder (images plus ``manifest.jsonl``).

Usage::

    python scripts/toy_world.py /tmp/toy --n 1000 --seed 7
    python scripts/toy_world.py /tmp/toy --n 50 --size 800x600 --formats jpg,png
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from searchengine.toy import world as toyworld


def _size(text: str) -> tuple[int, int]:
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise argparse.ArgumentTypeError(f"size must look like 640x480, got {text!r}")
    return int(width), int(height)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse options, call ``toyworld.generate``, report what was written."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="folder to write (created if missing)")
    parser.add_argument("--n", type=int, default=1000, help="number of images")
    parser.add_argument("--seed", type=int, default=7, help="world seed")
    parser.add_argument("--size", type=_size, default=(640, 480), help="WIDTHxHEIGHT")
    parser.add_argument("--formats", default="jpg,png,webp", help="comma-separated, cycled")
    args = parser.parse_args(argv)
    try:
        items = toyworld.generate(
            args.out_dir, args.n, args.seed, size=args.size, formats=args.formats.split(",")
        )
    except ValueError as error:
        parser.error(str(error))
    print(f"wrote {len(items)} images and {toyworld.MANIFEST_NAME} to {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
