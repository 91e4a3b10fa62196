"""What reading a camera RAW photo costs: the camera's preview against the sensor data.

Writes two DNGs of the same 24 MP picture (``tests/rawfiles.py``: one with a
1620x1080 JPEG preview, as cameras embed, one without) and a JPEG of it, and times
``decode_file`` at a model's input size (224 px) on each, as CPU seconds (LibRaw's
OpenMP threads included); prints each against the JPEG, measured in the same run.

    python scripts/bench_raw.py
    python scripts/bench_raw.py --megapixels 12 --rounds 5 --json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from rawfiles import write_dng

from searchengine.ingest.decode import decode_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megapixels", type=float, default=24.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    h = int(math.sqrt(args.megapixels * 1e6 / 1.5)) // 2 * 2
    w = int(h * 1.5) // 2 * 2
    rng = np.random.default_rng(0)
    small = (rng.random((h // 10, w // 10, 3)) * 255).astype(np.uint8)
    picture = Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)
    with tempfile.TemporaryDirectory(prefix="raw") as tmp:
        files = {
            "JPEG (DCT-scaled decode)": Path(tmp) / "a.jpg",
            "DNG, camera preview": Path(tmp) / "p.dng",
            "DNG, sensor data (half-size demosaic)": Path(tmp) / "s.dng",
        }
        picture.save(files["JPEG (DCT-scaled decode)"], quality=90)
        rgb = np.asarray(picture)
        write_dng(files["DNG, camera preview"], rgb, preview=picture.resize((1620, 1080)))
        write_dng(files["DNG, sensor data (half-size demosaic)"], rgb)
        seconds: dict[str, list[float]] = {name: [] for name in files}
        for _ in range(args.rounds):
            for name, path in files.items():
                started = time.process_time()
                decode_file(str(path), min_side=224)
                seconds[name].append(time.process_time() - started)
    base = min(seconds["JPEG (DCT-scaled decode)"])
    result = {n: {"cpu_s": min(s), "ratio_to_jpeg": min(s) / base} for n, s in seconds.items()}
    if args.json:
        print(json.dumps({"size": [w, h], "rounds": args.rounds, "cases": result}, indent=2))
        return
    print(f"{w}x{h} ({w * h / 1e6:.1f} MP), best of {args.rounds}, CPU seconds to 224 px:")
    for name, r in result.items():
        print(f"  {name:40s} {r['cpu_s']:.3f}  x{r['ratio_to_jpeg']:.1f} the JPEG")


if __name__ == "__main__":
    main()
