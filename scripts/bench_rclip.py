#!/usr/bin/env python
"""Peer benchmark: searchengine against rclip, and both against the machine's bound.

rclip (``pip install rclip``) is the fastest command-line peer on a CPU. Both tools
run here on one corpus, one machine and one model, alternating, so the ratios hold
whatever the machine's speed that day:

- **Model.** rclip runs ViT-B-32-256 in ONNX Runtime with weights it fetches from the
  hub, which cannot be reached here. The script writes one random-weight
  ViT-B-32-256 (identical compute) in both tools' formats, from the same torch model:
  an open_clip folder for searchengine (``local-dir:``), and rclip's own layout in a
  private ``RCLIP_DATADIR``, made as rclip's ``scripts/convert_model.py`` makes it
  (4.x: the legacy TorchScript exporter, ``model.visual`` as the image tower, the
  model's licence files beside it; 3.x: one ONNX file a tower). rclip then never
  touches the network.
- **searchengine** runs twice: with its fp32 image tower, and with the int8 one
  (``--precision int8``; built and checked once, untimed, like the ONNX export).
- **The bound.** What the machine allows for this corpus: the image tower alone
  (ONNX Runtime, batch 8, one call on all cores and one-thread calls side by side,
  the faster) and decoding alone as ingest decodes (read, hash, DCT-scaled decode,
  preprocess, on all cores), overlapped perfectly:
  ``bound = 1 / (1 / model rate + 1 / decode rate)``, for each tower. It is measured
  in every rotating round, as one more member of the rotation (two tries each), and
  the fastest decoding and tower over all of them count: a shared machine's quiet
  or slow spells then meet the bound as they meet the tools. Those parts are short
  tries (48 files, 64 images of random pixels) and the best of four, which a noisy
  machine's quiet seconds flatter; so the bound is also measured **like the tools**:
  once a round over the whole corpus (every file decoded as ingest decodes it, every
  decoded photo through the tower in one-thread lanes), the best of ``--rounds``.
  Both are printed, with ingest over each.
- **Ingest.** A fresh index each round: ``searchengine index CORPUS`` against ``rclip
  -f -t 10 QUERY`` run in the corpus. rclip indexes the folder before every query,
  so its indexing time is that run less its median cold query (in its favour).
  Images/s counts each tool's own indexed images; peak RSS from a small launcher.
- **Cold query.** ``searchengine search QUERY`` against ``rclip -n -f -t 10 QUERY``,
  each a fresh process (start to printed results), ``--queries`` times each.
- **Cold query by example.** ``searchengine similar PHOTO`` against ``rclip -n -f -t
  10 PHOTO`` the same way, with a photo not in the collection (the first of those
  ``--add`` copies in later), which each tool decodes and runs through its tower.
- **Unchanged refresh + query** and **add then search.** rclip re-checks the folder
  inside every query; searchengine's one command for that is ``search --refresh``.
  Each is timed with nothing changed, then again right after ``--add`` new photos
  were copied into the corpus (they are removed before the next tool's round).

The best of ``--rounds`` counts for each tool, and the order rotates each round.

rclip has its own pinned dependencies, so it lives in its own environment (4.x needs
Python 3.12 or later):

    python3.12 -m venv ~/rclip4 && ~/rclip4/bin/pip install rclip==4.0.8
    python3 -m venv ~/rclip3 && ~/rclip3/bin/pip install rclip==3.3.0

Examples:
    python scripts/bench_rclip.py --rclip ~/rclip4/bin/rclip -n 240          # 12 MP
    python scripts/bench_rclip.py --rclip ~/rclip4/bin/rclip -n 1000 --megapixels 1.9
    python scripts/bench_rclip.py --rclip ~/rclip3/bin/rclip -n 240 --precision fp32
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ingest import (
    EXE,
    bound,
    ceiling,
    compile_package,
    corpus_rates,
    cpu_count,
    decode_rate,
    index_cmd,
    prepare_int8_tower,
    run,
)
from make_bench_corpus import make_corpus

# rclip's model folder and files under its data dir (its model_download module).
RCLIP_MODEL_DIR = "ViT-B-32-256-datacomp_s34b_b86k"
RCLIP_VOCAB = "tokenizer/bpe_simple_vocab_16e6.txt.gz"
# rclip 4.x downloads the model's licence files with it and looks for them before it
# trusts a model folder; here they only say where the random weights came from.
RCLIP_LEGAL = ("LICENSE", "OPENAI-CLIP-MIT.txt", "README.md", "THIRD_PARTY_NOTICES.md")
QUERY = "kids building a sandcastle"
# A model of rclip's input and output shapes (256 px, 512-d, 77 tokens) but tiny
# widths: for a quick check that the benchmark runs, not for its figures.
TINY_CFG: dict[str, Any] = {
    "embed_dim": 512,
    "vision_cfg": {"image_size": 256, "patch_size": 32, "width": 64, "layers": 1, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}


def write_models(folder: Path, tiny: bool, major: int) -> Path:
    """One random-weight model in both layouts under ``folder`` (once); returns it."""
    done = folder / f"done-rclip{major}"
    if done.exists():
        return folder
    import open_clip
    import torch
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    from safetensors.torch import save_file

    ours = folder / "searchengine"
    model_cfg = TINY_CFG if tiny else open_clip.get_model_config("ViT-B-32-256")
    torch.manual_seed(0)
    model = open_clip.model.CLIP(**json.loads(json.dumps(model_cfg))).eval()
    if not (ours / "open_clip_model.safetensors").exists():
        ours.mkdir(parents=True, exist_ok=True)
        config = {
            "model_cfg": model_cfg,
            # rclip's preprocessing: shorter side to 256 (bicubic), centre crop, CLIP mean/std.
            "preprocess_cfg": {
                "mean": list(OPENAI_DATASET_MEAN),
                "std": list(OPENAI_DATASET_STD),
                "interpolation": "bicubic",
                "resize_mode": "shortest",
            },
        }
        (ours / "open_clip_config.json").write_text(json.dumps(config, indent=2))
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(ours / "open_clip_model.safetensors"))
    data = folder / f"rclip{major}"
    shutil.rmtree(data, ignore_errors=True)
    (data / RCLIP_MODEL_DIR).mkdir(parents=True)
    size = model_cfg["vision_cfg"]["image_size"]
    context = model_cfg["text_cfg"]["context_length"]
    if major >= 4:
        _rclip4_towers(model, size, context, data / RCLIP_MODEL_DIR)
        for name in RCLIP_LEGAL:
            (data / name).write_text("Random weights written by searchengine's benchmark.\n")
    else:
        _rclip3_towers(model, size, context, data / RCLIP_MODEL_DIR)
    vocab = data / RCLIP_VOCAB
    vocab.parent.mkdir(parents=True)
    shutil.copy(Path(open_clip.__file__).parent / vocab.name, vocab)
    done.touch()
    return folder


def _rclip4_towers(model: Any, size: int, context: int, out: Path) -> None:
    """As rclip 4's ``scripts/convert_model.py``: ``torch.onnx.export(dynamo=False)``,
    opset 18, ``model.visual`` and ``encode_text``, input "input", output "output"."""
    import contextlib
    import io
    import warnings

    import torch

    class Visual(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.visual = model.visual

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.visual(x)

    class Textual(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.clip_model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.clip_model.encode_text(x)

    towers = {
        "visual.onnx": (Visual(), torch.randn(1, 3, size, size)),
        "textual.onnx": (Textual(), torch.zeros(1, context, dtype=torch.long)),
    }
    for name, (tower, sample) in towers.items():
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                tower.eval(),
                (sample,),
                str(out / name),
                input_names=["input"],
                output_names=["output"],
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                opset_version=18,
                dynamo=False,
            )


def _rclip3_towers(model: Any, size: int, context: int, out: Path) -> None:
    """rclip 3.x's files: each tower one ONNX file with its weights inside."""
    import onnx
    import torch

    from searchengine.models.onnx_export import _onnx_export
    from searchengine.models.onnx_towers import ImageTower, TextTower

    batch = ({0: torch.export.Dim("batch", min=1, max=4096)},)
    towers = {
        "visual.onnx": (ImageTower(model), torch.zeros(2, 3, size, size)),
        "textual.onnx": (TextTower(model), torch.zeros(2, context, dtype=torch.long)),
    }
    for name, (tower, sample) in towers.items():
        _onnx_export(tower, (sample,), ["input"], batch, out / name)
        graph = onnx.load(str(out / name))  # with the weights beside it
        onnx.save(graph, str(out / name))
        (out / f"{name}.data").unlink()


class Ours:
    def __init__(self, corpus: Path, model_dir: Path, precision: str) -> None:
        self.corpus = corpus
        self.precision = precision
        self.name = f"searchengine {precision}"
        self.spec = f"local-dir:{model_dir / 'searchengine'}"
        self.home = Path(tempfile.mkdtemp(prefix=f"bench-peer-{precision}-"))

    def fresh(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)

    def index(self) -> tuple[dict[str, Any], int]:
        extra = ["--precision", self.precision]
        done = run(index_cmd(self.corpus, self.home, self.spec, extra))
        return done, int(json.loads(done["stdout"])["embedded"])

    def query(self, k: int = 10) -> dict[str, Any]:
        return self._search(k)

    def refresh_and_query(self) -> float:
        """Seconds to bring the index up to date and answer, in one command."""
        return float(self._search(10, "--refresh")["seconds"])

    def example_query(self, photo: Path, k: int = 10) -> dict[str, Any]:
        done = run([EXE, "similar", str(photo), "--index-dir", str(self.home), "-k", str(k)])
        assert len(done["stdout"].strip().splitlines()) == k, done["stdout"]
        return done

    def _search(self, k: int, *extra: str) -> dict[str, Any]:
        cmd = [EXE, "search", QUERY, "--index-dir", str(self.home), "-k", str(k), *extra]
        done = run(cmd)
        assert len(done["stdout"].strip().splitlines()) == k, done["stdout"]
        return done

    close = fresh


class Rclip:
    def __init__(self, exe: str, version: str, corpus: Path, model_dir: Path) -> None:
        self.exe, self.corpus = exe, corpus
        self.name = "rclip"
        self.data = model_dir / f"rclip{version.split('.')[0]}"
        self.env = {**os.environ, "RCLIP_DATADIR": str(self.data), "HF_HUB_OFFLINE": "1"}

    def fresh(self) -> None:
        for name in ("db.sqlite3", "db.sqlite3-wal", "db.sqlite3-shm", "db.sqlite3-journal"):
            (self.data / name).unlink(missing_ok=True)

    def index(self) -> tuple[dict[str, Any], int]:
        done = self._search(index=True)
        with contextlib.closing(sqlite3.connect(self.data / "db.sqlite3")) as db:
            (count,) = db.execute("SELECT COUNT(*) FROM images WHERE deleted IS NULL").fetchone()
        return done, int(count)

    def query(self, k: int = 10) -> dict[str, Any]:
        return self._search(index=False, k=k)

    def refresh_and_query(self) -> float:
        """Seconds to bring the index up to date and answer: one query, which re-checks."""
        return float(self._search(index=True)["seconds"])

    def example_query(self, photo: Path, k: int = 10) -> dict[str, Any]:
        return self._search(index=False, k=k, query=str(photo))

    def _search(self, index: bool, k: int = 10, query: str = QUERY) -> dict[str, Any]:
        cmd = [self.exe, "-f", "-t", str(k), *([] if index else ["-n"]), query]
        done = run(cmd, env=self.env, cwd=self.corpus)
        assert len(done["stdout"].strip().splitlines()) == k, done["stdout"]
        return done

    close = fresh


Tool = Ours | Rclip


def rclip_version(exe: str) -> str:
    try:
        done = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=120)
    except OSError as exc:
        raise SystemExit(f"cannot run rclip at {exe}: {exc}; see --help to install it") from exc
    version = done.stdout.strip().removeprefix("rclip ").strip()
    if done.returncode != 0 or not version.startswith(("3.", "4.")):
        raise SystemExit(
            f"{exe} is not rclip 3.x or 4.x ({done.stdout.strip() or done.stderr.strip()!r}); "
            "this benchmark writes those versions' model layouts: pip install rclip==4.0.8 "
            "(Python 3.12+) or rclip==3.3.0"
        )
    return version


def one_round(tool: Tool, queries: int, added: Path, added_into: Path) -> dict[str, Any]:
    tool.fresh()
    first, images = tool.index()
    asked = [tool.query() for _ in range(queries)]
    cold = [done["seconds"] for done in asked]
    example = min(p for p in added.rglob("*") if p.is_file())  # not in the collection yet
    by_example = [tool.example_query(example)["seconds"] for _ in range(queries)]
    unchanged = tool.refresh_and_query()
    shutil.copytree(added, added_into)
    try:
        add_then_search = tool.refresh_and_query()
    finally:
        shutil.rmtree(added_into)
    query_s = statistics.median(cold)
    # rclip's first run also answered a query; its indexing is the rest.
    index_s = first["seconds"] - query_s if isinstance(tool, Rclip) else first["seconds"]
    # Ours also says how long its pipeline took, start-up (imports, the catalog) aside.
    pipeline_s = json.loads(first["stdout"])["seconds"] if isinstance(tool, Ours) else index_s
    query_cpu = statistics.median(done["cpu_seconds"] for done in asked)
    index_cpu = first["cpu_seconds"] - (query_cpu if isinstance(tool, Rclip) else 0.0)
    return {
        "images": images,
        "first_run_seconds": first["seconds"],
        "index_seconds": index_s,
        "images_per_s": images / index_s,
        "pipeline_images_per_s": images / pipeline_s,
        "first_run_cpu_seconds": first["cpu_seconds"],
        "index_cpu_ms_per_image": 1000 * index_cpu / images,
        # Below 100 % a core idled (start-up, waits); at 100 % only CPU a photo is left.
        # Over the whole first run (rclip's includes its query), not over the indexing
        # share derived by subtraction, which a short run can make nonsense.
        "cores_busy_pct": 100 * first["cpu_seconds"] / (first["seconds"] * cpu_count()),
        "peak_rss_mb": first["peak_rss_mb"],
        "cold_query_seconds": cold,
        "cold_query_median_s": query_s,
        "example_query_seconds": by_example,
        "example_query_median_s": statistics.median(by_example),
        "refresh_query_seconds": unchanged,
        "add_then_search_seconds": add_then_search,
    }


def best(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure at its best over the rounds (fastest, smallest)."""
    return {
        "images": rounds[0]["images"],
        "images_per_s": max(r["images_per_s"] for r in rounds),
        "pipeline_images_per_s": max(r["pipeline_images_per_s"] for r in rounds),
        "index_cpu_ms_per_image": min(r["index_cpu_ms_per_image"] for r in rounds),
        "cores_busy_pct": max(r["cores_busy_pct"] for r in rounds),
        "peak_rss_mb": min(r["peak_rss_mb"] for r in rounds),
        "cold_query_median_s": min(r["cold_query_median_s"] for r in rounds),
        "example_query_median_s": min(r["example_query_median_s"] for r in rounds),
        "refresh_query_seconds": min(r["refresh_query_seconds"] for r in rounds),
        "add_then_search_seconds": min(r["add_then_search_seconds"] for r in rounds),
    }


def tower_bound(model: tuple[float, float], decode: tuple[float, float]) -> dict[str, float]:
    """One tower's figures beside decoding, each ``(images/s, ms of CPU a photo)``."""
    return {
        "model_images_per_s": model[0],
        "model_cpu_ms_per_image": model[1],
        "bound_images_per_s": bound(model[0], decode[0]),
        "bound_cpu_ms_per_image": model[1] + decode[1],
    }


def bounds(
    spec: str, corpus: Path, precisions: list[str], rounds: int, images: int
) -> dict[str, Any]:
    """The machine's bound for this corpus, for each image tower (see the module)."""
    from searchengine.models.onnx import cpu_count

    decode = decode_rate(corpus, spec, "cpu", rounds)
    out: dict[str, Any] = {
        "decode_images_per_s": decode.images_per_s,
        "decode_cpu_ms_per_image": decode.cpu_ms_per_image,
    }
    for precision in precisions:
        rates = {
            lanes: ceiling(spec, "cpu", "onnx", 8, images, rounds, lanes, precision)
            for lanes in sorted({1, cpu_count()})
        }
        model = max(rates.values(), key=lambda r: r.images_per_s)
        out[precision] = {
            **tower_bound(model, decode),
            "model_by_lanes": {n: r.images_per_s for n, r in rates.items()},
        }
    return out


def best_bounds(measured: list[dict[str, Any]], precisions: list[str]) -> dict[str, Any]:
    """The bound from the fastest decoding and the fastest tower over the rounds.

    Measured in every rotating round, beside the tools' own rounds, so that a slow
    or a quiet spell of a shared machine meets the bound as it meets the tools."""
    decode = max(measured, key=lambda m: m["decode_images_per_s"])
    out: dict[str, Any] = {
        "decode_images_per_s": decode["decode_images_per_s"],
        "decode_cpu_ms_per_image": decode["decode_cpu_ms_per_image"],
        "rounds": measured,
    }
    for p in precisions:
        model = max((m[p] for m in measured), key=lambda m: m["model_images_per_s"])
        out[p] = {
            **tower_bound(
                (model["model_images_per_s"], model["model_cpu_ms_per_image"]),
                (out["decode_images_per_s"], out["decode_cpu_ms_per_image"]),
            ),
            "model_by_lanes": model["model_by_lanes"],
        }
    out["corpus"] = corpus_bound([m["corpus"] for m in measured], precisions)
    return out


def corpus_bound(measured: list[dict[str, Any]], precisions: list[str]) -> dict[str, Any]:
    """The bound measured like the tools: the whole corpus, one try a rotating round,
    the fastest decoding and the fastest tower over the rounds (see ``corpus_rates``)."""
    decode = max((m["decode"] for m in measured), key=lambda r: r[0])
    out: dict[str, Any] = {
        "decode_images_per_s": decode[0],
        "decode_cpu_ms_per_image": decode[1],
    }
    for p in precisions:
        out[p] = tower_bound(max((m[p] for m in measured), key=lambda r: r[0]), decode)
    return out


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The corpus, rounds and output options every peer benchmark takes."""
    parser.add_argument("-n", type=int, default=48, help="corpus files (default 48)")
    parser.add_argument("--megapixels", type=float, default=12.0)
    parser.add_argument("--corpus", type=Path, default=None, help="use this folder as is")
    parser.add_argument(
        "--precision", default="fp32,int8", help="searchengine's image towers (default both)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (best counts)")
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "searchengine-bench")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")


def prepare_ours(
    spec: str, precisions: list[str], work: Path, megapixels: float
) -> dict[str, Any] | None:
    """What searchengine makes once per model, untimed: the ONNX export, and the int8
    tower (built and checked) when asked for; that check's figures."""
    from searchengine.models import load_encoder

    load_encoder(spec, "cpu", "auto").close()
    if "int8" not in precisions:
        return None
    return prepare_int8_tower(spec, work, min(megapixels, 1.0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[-2:]),
    )
    parser.add_argument("--rclip", required=True, help="the rclip executable (3.x or 4.x)")
    add_common_arguments(parser)
    parser.add_argument("--add", type=int, default=None, help="photos added (default n/10)")
    parser.add_argument("--queries", type=int, default=5, help="cold queries a round and tool")
    parser.add_argument("--ceiling-images", type=int, default=64, help="images per model round")
    parser.add_argument("--tiny", action="store_true", help="tiny model: checks the script only")
    args = parser.parse_args(argv)
    compile_package()

    version = rclip_version(args.rclip)
    precisions = [p for p in args.precision.split(",") if p]
    corpus = args.corpus or args.work / f"corpus-{args.n}-{args.megapixels:g}mp"
    if args.corpus is None:
        make_corpus(corpus, args.n, args.megapixels)
    count = max(1, args.add if args.add is not None else args.n // 10)
    added = args.work / f"added-{args.n}-{count}-{args.megapixels:g}mp"
    make_corpus(added, count, args.megapixels, broken=False, first=args.n)
    model_dir = write_models(
        args.work / ("peer-tiny" if args.tiny else "peer-ViT-B-32-256"),
        args.tiny,
        int(version.split(".")[0]),
    )
    tools: list[Tool] = [Ours(corpus, model_dir, p) for p in precisions]
    tools.append(Rclip(args.rclip, version, corpus, model_dir))
    spec = tools[0].spec if isinstance(tools[0], Ours) else ""
    check = prepare_ours(spec, precisions, args.work, args.megapixels)
    rounds: dict[str, list[dict[str, Any]]] = {tool.name: [] for tool in tools}
    measured: list[dict[str, Any]] = []  # the bound, measured in the rotation too
    members: list[Tool | None] = [*tools, None]
    into = corpus / "zz-added-by-bench"
    shutil.rmtree(into, ignore_errors=True)
    try:
        for i in range(args.rounds):
            for tool in members[i % len(members) :] + members[: i % len(members)]:
                if tool is None:
                    measured.append(bounds(spec, corpus, precisions, 2, args.ceiling_images))
                    measured[-1]["corpus"] = corpus_rates(corpus, spec, precisions)
                else:
                    rounds[tool.name].append(one_round(tool, args.queries, added, into))
    finally:
        for tool in tools:
            tool.close()
    results = {
        "rclip_version": version,
        "model": "tiny (script check only)" if args.tiny else "ViT-B-32-256, random weights",
        "corpus": str(corpus),
        "added": count,
        "int8_check": check,
        "bound": best_bounds(measured, precisions),
        "rounds": rounds,
        "best": {name: best(r) for name, r in rounds.items()},
    }
    return report(results, argv, args, ratios, _print)


def report(
    results: dict[str, Any],
    argv: list[str] | None,
    args: argparse.Namespace,
    ratios: Callable[[dict[str, Any], list[str]], dict[str, dict[str, float]]],
    show: Callable[[dict[str, Any], list[str], argparse.Namespace], None],
) -> int:
    """A peer benchmark's end: its ``results`` (the tools' rounds and best figures
    among them) with the machine and the ``ratios``, shown and written to ``--json``;
    the exit status."""
    precisions = [p for p in args.precision.split(",") if p]
    results = {
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "argv": sys.argv[1:] if argv is None else argv,
        **results,
    }
    results["ratios"] = ratios(results, precisions)
    show(results, precisions, args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def print_best(
    r: dict[str, Any], names: list[str], rows: list[tuple[str, str, str]], rounds: int
) -> None:
    """The tools' best figures, a column each: ``rows`` of (label, key, format); a
    tool without a figure gets an empty cell."""
    print(f"best of {rounds} rotating rounds  " + "".join(f"{n:>19}" for n in names))
    for label, key, fmt in rows:
        cells = (r["best"][n].get(key) for n in names)
        print(f"{label:30s}" + "".join(" " * 19 if v is None else fmt.format(v) for v in cells))


def ratios(r: dict[str, Any], precisions: list[str]) -> dict[str, dict[str, float]]:
    """Each searchengine figure over rclip's, and ingest over the bound of its tower."""
    peer = r["best"]["rclip"]
    out = {}
    for p in precisions:
        ours = r["best"][f"searchengine {p}"]
        out[p] = {
            "ingest_vs_rclip": ours["images_per_s"] / peer["images_per_s"],
            "ingest_vs_bound": ours["images_per_s"] / r["bound"][p]["bound_images_per_s"],
            "ingest_cpu_vs_bound": r["bound"][p]["bound_cpu_ms_per_image"]
            / ours["index_cpu_ms_per_image"],
            "ingest_vs_corpus_bound": ours["images_per_s"]
            / r["bound"]["corpus"][p]["bound_images_per_s"],
            "ingest_cpu_vs_corpus_bound": r["bound"]["corpus"][p]["bound_cpu_ms_per_image"]
            / ours["index_cpu_ms_per_image"],
            "pipeline_vs_corpus_bound": ours["pipeline_images_per_s"]
            / r["bound"]["corpus"][p]["bound_images_per_s"],
            "peak_rss_vs_rclip": ours["peak_rss_mb"] / peer["peak_rss_mb"],
            "cold_query_vs_rclip": ours["cold_query_median_s"] / peer["cold_query_median_s"],
            "example_query_vs_rclip": ours["example_query_median_s"]
            / peer["example_query_median_s"],
            "refresh_query_vs_rclip": ours["refresh_query_seconds"] / peer["refresh_query_seconds"],
            "add_then_search_vs_rclip": ours["add_then_search_seconds"]
            / peer["add_then_search_seconds"],
        }
    fp32, whole = r["bound"].get("fp32"), r["bound"]["corpus"].get("fp32")
    out["rclip"] = {
        "ingest_vs_bound": peer["images_per_s"] / fp32["bound_images_per_s"] if fp32 else 0.0,
        "ingest_cpu_vs_bound": fp32["bound_cpu_ms_per_image"] / peer["index_cpu_ms_per_image"]
        if fp32
        else 0.0,
        "ingest_vs_corpus_bound": peer["images_per_s"] / whole["bound_images_per_s"]
        if whole
        else 0.0,
    }
    return out


def _print(r: dict[str, Any], precisions: list[str], args: argparse.Namespace) -> None:
    names = [f"searchengine {p}" for p in precisions] + ["rclip"]
    b = r["bound"]
    print(f"rclip {r['rclip_version']}; model: {r['model']}; corpus: {r['corpus']}")
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in r['loadavg'])}")
    print(
        f"decoding alone: {b['decode_images_per_s']:.1f} images/s on all cores "
        f"(the bound: fastest of {len(b['rounds'])} rounds in the rotation)"
    )
    for p in precisions:
        print(
            f"{p} image tower alone: {b[p]['model_images_per_s']:.1f} images/s; bound "
            f"(perfect overlap with decoding): {b[p]['bound_images_per_s']:.1f} images/s, "
            f"{b[p]['bound_cpu_ms_per_image']:.0f} ms of CPU a photo"
        )
    c = b["corpus"]
    print(
        f"the bound measured like the tools (whole corpus, one try a round, best of "
        f"{len(b['rounds'])}): decoding {c['decode_images_per_s']:.1f} images/s, "
        + ", ".join(
            f"{p} tower {c[p]['model_images_per_s']:.1f}, bound {c[p]['bound_images_per_s']:.1f} "
            f"images/s ({c[p]['bound_cpu_ms_per_image']:.0f} ms of CPU a photo)"
            for p in precisions
        )
    )
    rows = [
        ("ingest images/s", "images_per_s", "{:19.1f}"),
        ("CPU a photo indexed (ms)", "index_cpu_ms_per_image", "{:19.0f}"),
        ("cores busy indexing (%)", "cores_busy_pct", "{:19.0f}"),
        ("peak RSS indexing (MB)", "peak_rss_mb", "{:19.0f}"),
        ("cold query, median (s)", "cold_query_median_s", "{:19.2f}"),
        ("cold query by example (s)", "example_query_median_s", "{:19.2f}"),
        ("unchanged refresh+query (s)", "refresh_query_seconds", "{:19.2f}"),
        (f"add {r['added']} then search (s)", "add_then_search_seconds", "{:19.2f}"),
        ("images indexed", "images", "{:19d}"),
    ]
    print_best(r, names, rows, args.rounds)
    for p in precisions:
        q = r["ratios"][p]
        print(
            f"searchengine {p}: ingest {q['ingest_vs_rclip']:.2f}x rclip, "
            f"{q['ingest_vs_bound']:.2f} of the bound ({q['ingest_cpu_vs_bound']:.2f} in CPU "
            f"a photo), {q['ingest_vs_corpus_bound']:.2f} of the bound measured like the tools "
            f"({q['ingest_cpu_vs_corpus_bound']:.2f}; the pipeline without start-up "
            f"{q['pipeline_vs_corpus_bound']:.2f}); cold query {q['cold_query_vs_rclip']:.2f}, "
            f"by example {q['example_query_vs_rclip']:.2f}, "
            f"refresh+query {q['refresh_query_vs_rclip']:.2f}, add then search "
            f"{q['add_then_search_vs_rclip']:.2f}, peak RSS {q['peak_rss_vs_rclip']:.2f} of rclip's"
        )
    if "fp32" in precisions:
        q = r["ratios"]["rclip"]
        print(
            f"rclip: ingest {q['ingest_vs_bound']:.2f} of the fp32 bound "
            f"({q['ingest_cpu_vs_bound']:.2f} in CPU a photo), "
            f"{q['ingest_vs_corpus_bound']:.2f} of the one measured like the tools"
        )


if __name__ == "__main__":
    sys.exit(main())
