#!/usr/bin/env python
"""Peer benchmark: searchengine's ingest against clip-retrieval's, on one CPU machine.

clip-retrieval (``pip install clip-retrieval``) is the common open-source way to
embed a folder of images with CLIP and make it searchable. Both tools run here on
one corpus, one machine and one model, alternating, so the ratios hold whatever the
machine's speed that day:

- **Model.** No model hub can be reached here. The script uses the random-weight
  ViT-B-32-256 that ``bench_rclip.py`` writes (identical compute; its open_clip
  folder for searchengine's ``local-dir:``), and saves the same weights as a torch
  checkpoint for clip-retrieval, which takes ``--clip_model
  open_clip:ViT-B-32-256/<checkpoint path>`` (all_clip passes what follows the first
  "/" to open_clip as ``pretrained``, which loads a file path). That both tools
  embed with these weights is checked on their outputs: the cosine of each upright
  photo's vector from one tool with its vector from the other, beside the cosine of
  two different photos under one tool (the baseline: a random-weight model finds all
  photos alike), and whether each photo's vector from one tool is nearest to its own
  among the other's.
- **clip-retrieval's ingest** is what a user runs to get a searchable index: ``clip-
  retrieval inference --input_format files --enable_text False`` (embeddings and
  their file names), then ``clip-retrieval index`` (autofaiss builds the index from
  them). Both are timed, and reported apart and together. It runs on the CPU (its
  device is CUDA when torch sees one; the script hides any), with ``--use_jit False``,
  ``--num_prepro_workers 2`` (its DataLoader processes decode and preprocess, one a
  core of the 2-core machine this was written on; ``--workers``) and a batch of 16
  (``--batch-size``). Its default of 256 would make a corpus of a few hundred photos
  one or two batches, each decoded by one process while the other idles; and its
  warm-up runs two batches of that size through both towers before any photo. Batch
  16 against 32: 2 % fewer images/s from its image tower alone (about 23 on 2 cores),
  2 s less warm-up and half the last batch that nothing overlaps.
- **searchengine's ingest** is ``searchengine index CORPUS`` into a fresh index, with
  its fp32 image tower and with the int8 one (``--precision int8``; built and checked
  once, untimed, like the one-time ONNX export).
- **Figures.** Images/s counts each tool's own embedded images (the corpus holds a
  few broken files that both skip) over the wall time of its commands, start-up
  included; CPU a photo (user + system of the command and the processes it waited
  for); peak RSS as ``bench_rclip.py`` measures it (the command's largest process:
  clip-retrieval's decoding processes are not added to it). A fresh output folder
  every round; the best of ``--rounds`` counts for each tool, and the order rotates
  each round.

Not compared: querying. clip-retrieval's only command-line query (``clip-retrieval
filter``) loads OpenAI's ``ViT-B/32`` through the ``clip`` package, which downloads it
and checks it against a SHA256, so it cannot run offline with the shared model; its
query path is otherwise a server (``clip-retrieval back``), not a command. Nor does
clip-retrieval turn photos upright by their EXIF orientation (searchengine does),
which is why only upright photos enter the cosine check.

clip-retrieval has its own pinned dependencies (numpy<2, pyarrow<16, torch,
open_clip...), so it lives in its own environment. Its ``clip`` package imports
``pkg_resources``, which setuptools 81 and later no longer have, hence the pin:

    python3 -m venv /tmp/cr-venv
    /tmp/cr-venv/bin/pip install clip-retrieval==2.45.0 "setuptools<81"

Examples:
    python scripts/bench_clip_retrieval.py --clip-retrieval /tmp/cr-venv/bin/clip-retrieval \\
        -n 240                                                  # 12 MP
    python scripts/bench_clip_retrieval.py --clip-retrieval /tmp/cr-venv/bin/clip-retrieval \\
        -n 1000 --megapixels 1.9 --precision fp32
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ingest import compile_package, cpu_count, run
from bench_rclip import Ours, add_common_arguments, prepare_ours, print_best, report, write_models
from make_bench_corpus import make_corpus

# The clip-retrieval release this was written against (its options and output layout).
TESTED = "2.45.0"
CHECKPOINT = "clip-retrieval/ViT-B-32-256.pt"  # under the model folder
ORIENTATION = 0x0112  # EXIF


def write_checkpoint(model_dir: Path) -> Path:
    """The searchengine folder's weights as a torch checkpoint (once); returns its path."""
    path = model_dir / CHECKPOINT
    if not path.exists():
        import torch
        from safetensors.torch import load_file

        path.parent.mkdir(parents=True, exist_ok=True)
        state = load_file(str(model_dir / "searchengine" / "open_clip_model.safetensors"))
        part = path.with_name(path.name + ".part")
        torch.save(state, part)
        os.replace(part, path)
    return path


def cr_version(exe: str) -> str:
    """clip-retrieval's version, from its environment's Python (which must import it)."""
    python = Path(exe).with_name("python")
    check = "import importlib.metadata as m, pkg_resources; print(m.version('clip-retrieval'))"
    try:
        done = subprocess.run([python, "-c", check], capture_output=True, text=True, timeout=120)
    except OSError as exc:
        raise SystemExit(f"cannot run {python}: {exc}; see --help to install it") from exc
    if done.returncode != 0 or not Path(exe).exists():
        raise SystemExit(
            f"{exe} is not a working clip-retrieval ({done.stderr.strip()[-300:]!r}); "
            f'see --help: pip install clip-retrieval=={TESTED} "setuptools<81"'
        )
    version = done.stdout.strip()
    if version != TESTED:
        print(f"note: clip-retrieval {version}; this benchmark was written against {TESTED}")
    return version


class ClipRetrieval:
    """``clip-retrieval inference`` then ``clip-retrieval index``, on the CPU."""

    name = "clip-retrieval"

    def __init__(self, exe: str, corpus: Path, checkpoint: Path, batch: int, workers: int) -> None:
        self.exe, self.corpus = exe, corpus
        self.model = f"open_clip:ViT-B-32-256/{checkpoint.resolve()}"
        self.batch, self.workers = batch, workers
        self.root = Path(tempfile.mkdtemp(prefix="bench-peer-clip-retrieval-"))
        self.embeddings, self.index_dir = self.root / "emb", self.root / "index"
        # No GPU for torch (its device is CUDA whenever torch sees one), no hub, no wandb.
        self.env = {
            **os.environ,
            "CUDA_VISIBLE_DEVICES": "",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "WANDB_MODE": "disabled",
        }

    def fresh(self) -> None:
        shutil.rmtree(self.embeddings, ignore_errors=True)
        shutil.rmtree(self.index_dir, ignore_errors=True)

    def index(self) -> tuple[dict[str, Any], dict[str, Any], int]:
        """Both commands, timed apart; and the photos embedded."""
        embed = [
            self.exe,
            "inference",
            "--input_dataset",
            str(self.corpus),
            "--output_folder",
            str(self.embeddings),
            "--input_format",
            "files",
            "--enable_text",
            "False",
            "--enable_metadata",
            "False",
            "--clip_model",
            self.model,
            "--use_jit",
            "False",
            "--batch_size",
            str(self.batch),
            "--num_prepro_workers",
            str(self.workers),
        ]
        inference = run(embed, env=self.env)
        if "on cpu" not in inference["stdout"]:  # all_clip: "warming up with batch size N on cpu"
            raise RuntimeError(f"clip-retrieval did not run on the CPU: {inference['stdout']}")
        build = [
            self.exe,
            "index",
            "--embeddings_folder",
            str(self.embeddings),
            "--index_folder",
            str(self.index_dir),
        ]
        index = run(build, env=self.env)
        if not list(self.index_dir.glob("image.index")):
            raise RuntimeError(f"clip-retrieval index wrote no image.index in {self.index_dir}")
        return inference, index, len(self.vectors())

    def vectors(self) -> dict[str, np.ndarray]:
        """Its embeddings by file path, from the last round's output."""
        import pandas as pd

        out: dict[str, np.ndarray] = {}
        for part in sorted((self.embeddings / "img_emb").glob("img_emb_*.npy")):
            number = part.stem.removeprefix("img_emb_")
            names = pd.read_parquet(self.embeddings / "metadata" / f"metadata_{number}.parquet")
            matrix = np.load(part).astype(np.float32)
            out.update(zip(names["image_path"], matrix, strict=True))
        return out

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


Tool = Ours | ClipRetrieval


def one_round(tool: Tool) -> dict[str, Any]:
    tool.fresh()
    if isinstance(tool, Ours):
        done, images = tool.index()
        steps = {"ingest": done}
        # Ours also says how long its pipeline took, start-up (imports, the catalog) aside.
        pipeline_s = float(json.loads(done["stdout"])["seconds"])
    else:
        inference, index, images = tool.index()
        steps = {"inference": inference, "index": index}
        pipeline_s = 0.0
    seconds = sum(s["seconds"] for s in steps.values())
    cpu = sum(s["cpu_seconds"] for s in steps.values())
    out = {
        "images": images,
        "seconds": seconds,
        "images_per_s": images / seconds,
        "cpu_ms_per_image": 1000 * cpu / images,
        "cores_busy_pct": 100 * cpu / (seconds * cpu_count()),
        "peak_rss_mb": max(s["peak_rss_mb"] for s in steps.values()),
        "steps": {
            k: {n: s[n] for n in ("seconds", "cpu_seconds", "peak_rss_mb")}
            for k, s in steps.items()
        },
    }
    if pipeline_s:
        out["pipeline_images_per_s"] = images / pipeline_s
    return out


def best(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure at its best over the rounds (fastest, smallest)."""
    out = {
        "images": rounds[0]["images"],
        "images_per_s": max(r["images_per_s"] for r in rounds),
        "seconds": min(r["seconds"] for r in rounds),
        "cpu_ms_per_image": min(r["cpu_ms_per_image"] for r in rounds),
        "cores_busy_pct": max(r["cores_busy_pct"] for r in rounds),
        "peak_rss_mb": min(r["peak_rss_mb"] for r in rounds),
    }
    for step in rounds[0]["steps"]:
        out[f"{step}_seconds"] = min(r["steps"][step]["seconds"] for r in rounds)
    if "pipeline_images_per_s" in rounds[0]:
        out["pipeline_images_per_s"] = max(r["pipeline_images_per_s"] for r in rounds)
    return out


def our_vectors(home: Path) -> dict[str, np.ndarray]:
    """searchengine's stored vectors by file path, from its last round's index."""
    from searchengine.collection import Collection
    from searchengine.config import Config

    with Collection.open(config=Config.from_env(home=home)) as collection:
        records = list(collection.catalog.records("ok"))
        ids = np.array([r.id for r in records], dtype=np.int64)
        matrix = collection.vectors().reconstruct_batch(ids)
    return {r.path: v for r, v in zip(records, matrix, strict=True)}


def upright(path: str) -> bool:
    from PIL import Image

    with Image.open(path) as image:
        return int(image.getexif().get(ORIENTATION, 1)) == 1


def same_weights(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> dict[str, Any]:
    """How alike the two tools' vectors of the same upright photo are (see the module)."""
    paths = sorted(p for p in set(ours) & set(theirs) if upright(p))
    if len(paths) < 2:
        raise RuntimeError("fewer than two upright photos embedded by both tools")
    a = np.stack([ours[p] for p in paths])
    b = np.stack([theirs[p] for p in paths])
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    cross = b @ a.T  # theirs (rows) against ours (columns)
    same = np.diag(cross)
    others = (a @ a.T)[~np.eye(len(paths), dtype=bool)]
    return {
        "photos": len(paths),
        "example": Path(paths[0]).name,
        "example_cosine": float(same[0]),
        "same_photo_min": float(same.min()),
        "same_photo_median": float(np.median(same)),
        "other_photos_median": float(np.median(others)),
        "other_photos_max": float(others.max()),
        "nearest_is_itself": int((cross.argmax(axis=1) == np.arange(len(paths))).sum()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[-3:]),
    )
    parser.add_argument(
        "--clip-retrieval", required=True, help="the clip-retrieval executable (its own venv)"
    )
    add_common_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=16, help="clip-retrieval's batch")
    parser.add_argument(
        "--workers", type=int, default=2, help="clip-retrieval's decoding processes"
    )
    args = parser.parse_args(argv)
    compile_package()

    version = cr_version(args.clip_retrieval)
    precisions = [p for p in args.precision.split(",") if p]
    corpus = (args.corpus or args.work / f"corpus-{args.n}-{args.megapixels:g}mp").resolve()
    if args.corpus is None:
        make_corpus(corpus, args.n, args.megapixels)
    # bench_rclip's model (and rclip 4's layout of it, so that both scripts share it).
    model_dir = write_models(args.work.resolve() / "peer-ViT-B-32-256", False, 4)
    checkpoint = write_checkpoint(model_dir)
    tools: list[Tool] = [Ours(corpus, model_dir, p) for p in precisions]
    peer = ClipRetrieval(args.clip_retrieval, corpus, checkpoint, args.batch_size, args.workers)
    tools.append(peer)
    spec = tools[0].spec if isinstance(tools[0], Ours) else ""
    check = prepare_ours(spec, precisions, args.work, args.megapixels)
    rounds: dict[str, list[dict[str, Any]]] = {tool.name: [] for tool in tools}
    try:
        for i in range(args.rounds):
            for tool in tools[i % len(tools) :] + tools[: i % len(tools)]:
                rounds[tool.name].append(one_round(tool))
        # The last round's outputs, before they are removed.
        ours = next(t for t in tools if isinstance(t, Ours))
        weights = same_weights(our_vectors(ours.home), peer.vectors())
        weights["searchengine"] = ours.name
    finally:
        for tool in tools:
            tool.close()
    results = {
        "clip_retrieval_version": version,
        "clip_retrieval_options": {"batch_size": args.batch_size, "workers": args.workers},
        "model": "ViT-B-32-256, random weights",
        "corpus": str(corpus),
        "int8_check": check,
        "same_weights": weights,
        "rounds": rounds,
        "best": {name: best(r) for name, r in rounds.items()},
    }
    return report(results, argv, args, ratios, _print)


def ratios(r: dict[str, Any], precisions: list[str]) -> dict[str, dict[str, float]]:
    """Each searchengine figure over clip-retrieval's."""
    peer = r["best"]["clip-retrieval"]
    inference_rate = peer["images"] / peer["inference_seconds"]
    out = {}
    for p in precisions:
        ours = r["best"][f"searchengine {p}"]
        out[p] = {
            "ingest_vs_clip_retrieval": ours["images_per_s"] / peer["images_per_s"],
            "ingest_vs_its_inference_alone": ours["images_per_s"] / inference_rate,
            "cpu_per_image_vs_clip_retrieval": ours["cpu_ms_per_image"] / peer["cpu_ms_per_image"],
            "peak_rss_vs_clip_retrieval": ours["peak_rss_mb"] / peer["peak_rss_mb"],
        }
    return out


def _print(r: dict[str, Any], precisions: list[str], args: argparse.Namespace) -> None:
    names = [f"searchengine {p}" for p in precisions] + ["clip-retrieval"]
    w = r["same_weights"]
    print(
        f"clip-retrieval {r['clip_retrieval_version']} (batch {args.batch_size}, "
        f"{args.workers} decoding processes, CPU); model: {r['model']}; corpus: {r['corpus']}"
    )
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in r['loadavg'])}")
    print(
        f"same weights: {w['example']} cosine {w['example_cosine']:.5f} between the tools' "
        f"vectors ({w['searchengine']}); over {w['photos']} upright photos min "
        f"{w['same_photo_min']:.5f}, median {w['same_photo_median']:.5f}, against "
        f"{w['other_photos_median']:.4f} (max {w['other_photos_max']:.4f}) for two different "
        f"photos; nearest is the photo itself for {w['nearest_is_itself']} of {w['photos']}"
    )
    rows = [
        ("ingest images/s", "images_per_s", "{:19.1f}"),
        ("ingest, wall (s)", "seconds", "{:19.1f}"),
        ("  clip-retrieval inference (s)", "inference_seconds", "{:19.1f}"),
        ("  clip-retrieval index (s)", "index_seconds", "{:19.1f}"),
        ("CPU a photo (ms)", "cpu_ms_per_image", "{:19.0f}"),
        ("cores busy (%)", "cores_busy_pct", "{:19.0f}"),
        ("peak RSS (MB)", "peak_rss_mb", "{:19.0f}"),
        ("images embedded", "images", "{:19d}"),
    ]
    print_best(r, names, rows, args.rounds)
    peer = r["best"]["clip-retrieval"]
    print(
        f"clip-retrieval: inference {peer['inference_seconds']:.1f} s + index "
        f"{peer['index_seconds']:.1f} s (the best of each), {peer['seconds']:.1f} s in its "
        f"best round"
    )
    for p in precisions:
        q = r["ratios"][p]
        ours = r["best"][f"searchengine {p}"]
        print(
            f"searchengine {p}: ingest {q['ingest_vs_clip_retrieval']:.2f}x clip-retrieval "
            f"({q['ingest_vs_its_inference_alone']:.2f}x its inference alone); CPU a photo "
            f"{q['cpu_per_image_vs_clip_retrieval']:.2f}, peak RSS "
            f"{q['peak_rss_vs_clip_retrieval']:.2f} of clip-retrieval's; its pipeline without "
            f"start-up {ours['pipeline_images_per_s']:.1f} images/s"
        )


if __name__ == "__main__":
    sys.exit(main())
