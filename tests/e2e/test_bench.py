"""bench, score and caption-eval as a user runs them.

Fast tests use the colour-space fake encoder and a fake captioner; ``slow`` ones run the
real CLI with real model code offline (fake hub: tiny random CLIPS, transformers CLIP and
BLIP) on a toy world, and, when the shipped toy models exist, check their recall.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from fakehub import BLIP_CAPTION_REPO_ID, CLIPS_REPO_ID, HF_CLIP_REPO_ID
from imagegen import noise, solid
from importcheck import imported_after
from PIL import Image

from searchengine import Collection, Config
from searchengine.cli import main
from searchengine.evaluation import (
    RatedCaption,
    bench_collection,
    caption_eval,
    load_dataset,
    retrieval_metrics,
    run_bench,
    score_captions,
)
from searchengine.models.fake import FakeEncoder
from searchengine.scoring import clip_score, ref_clip_score, with_prefix

CLIPS = f"hf-hub:{CLIPS_REPO_ID}"
HF_CLIP = f"hf:{HF_CLIP_REPO_ID}"
RGB = {"red": (230, 10, 10), "green": (10, 230, 10), "blue": (10, 10, 230)}


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def run_stdout(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


class CountingLoader:
    """Loads fake encoders and counts the loads."""

    def __init__(self) -> None:
        self.loaded: list[str] = []

    def __call__(self, spec: str, device: str) -> FakeEncoder:
        self.loaded.append(spec)
        return FakeEncoder(spec)


class ColourCaptioner:
    """Captions an image with the name of its closest pure colour."""

    model = "fake-captioner"
    device = "cpu"

    def __init__(self) -> None:
        self.captioned = 0

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        self.captioned += len(images)
        out = []
        for image in images:
            mean = np.asarray(image.convert("RGB"), dtype=float).reshape(-1, 3).mean(0)
            out.append(min(RGB, key=lambda n: float(np.sum((np.array(RGB[n]) - mean) ** 2))))
        return [f"a {name} picture" for name in out]

    def close(self) -> None:
        pass


@pytest.fixture
def colours(tmp_path: Path) -> Path:
    """A sidecar-caption dataset the fake encoder solves: one colour per image."""
    folder = tmp_path / "colours"
    for name, rgb in RGB.items():
        solid(folder / f"{name}.png", rgb, fmt="PNG")
        (folder / f"{name}.txt").write_text(f"{name}\nsomething {name}\n")
    return folder


# ------------------------------------------------------------------- library, fast fakes


def test_bench_caches_embeddings_per_dataset_and_model(colours: Path, tmp_path: Path):
    data = load_dataset(colours)
    loader = CountingLoader()
    first = run_bench(data, ["fake:a", "fake:b"], cache_dir=tmp_path / "c", load=loader)
    assert loader.loaded == ["fake:a", "fake:b"]
    assert [r.cached for r in first.results] == [False, False]
    for result in first.results:  # colours are found exactly
        assert result.metrics.text_to_image[1] == 1.0 and result.metrics.image_to_text_mrr == 1.0
    again = run_bench(data, ["fake:a", "fake:b"], cache_dir=tmp_path / "c", load=loader)
    assert loader.loaded == ["fake:a", "fake:b"]  # nothing loaded, nothing embedded
    assert [r.cached for r in again.results] == [True, True]
    assert again.to_csv() == first.to_csv()
    run_bench(data, ["fake:a"], cache_dir=tmp_path / "c", use_cache=False, load=loader)
    assert loader.loaded[-1] == "fake:a" and len(loader.loaded) == 3
    (colours / "red.txt").write_text("blue\n")  # another dataset now: recomputed
    changed = run_bench(load_dataset(colours), ["fake:a"], cache_dir=tmp_path / "c", load=loader)
    assert not changed.results[0].cached
    assert changed.results[0].metrics.text_to_image[1] < 1.0


def test_bench_report_formats(colours: Path, tmp_path: Path):
    report = run_bench(
        load_dataset(colours),
        ["fake:a"],
        ks=(1, 2),
        cache_dir=tmp_path,
        load=CountingLoader(),
        curves=True,
    )
    table = report.to_table().splitlines()
    assert table[0] == "colours: 3 images, 6 captions"
    assert table[1].split() == [
        "model", "t2i", "R@1", "t2i", "R@2", "t2i", "MRR", "i2t", "R@1", "i2t", "R@2", "i2t", "MRR"
    ]  # fmt: skip
    assert table[2].split() == ["fake:a", *["100.0"] * 6]
    data = report.to_dict()
    assert data["results"][0]["t2i_R@1"] == 1.0 and data["ks"] == [1, 2]
    assert report.to_csv().splitlines()[0].startswith("dataset,model,t2i_R@1,t2i_R@2,t2i_MRR")
    assert report.results[0].curves["t2i"] == {1: 1.0, 2: 1.0, 3: 1.0}
    png = report.plot(tmp_path / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_score_table_numbers(tmp_path: Path):
    image = solid(tmp_path / "red.png", RGB["red"], fmt="PNG")
    table = score_captions(image, ["red", "blue"], ["fake:a"], load=CountingLoader())
    encoder = FakeEncoder()
    vector = encoder.encode_images([Image.open(image).convert("RGB")])[0]
    for row, text in enumerate(["red", "blue"]):
        got = table.get(row, "fake:a")
        cosine = float(encoder.encode_texts([text])[0] @ vector)
        prefixed = float(encoder.encode_texts([with_prefix(text)])[0] @ vector)
        assert got.cosine == pytest.approx(cosine, abs=1e-6)
        assert got.logit == pytest.approx(100.0 * cosine, abs=1e-4)
        assert got.clip_score == pytest.approx(float(clip_score(prefixed)), abs=1e-6)
    probs = [table.get(i, "fake:a").prob for i in range(2)]
    assert sum(probs) == pytest.approx(1.0) and probs[0] > 0.99
    assert "A logit" in table.to_table() and "[A] fake:a" in table.to_table()
    assert table.to_dict()["captions"][0]["scores"]["fake:a"]["prob"] == probs[0]


def test_caption_eval_with_captioner_references_and_ratings(colours: Path):
    images = sorted(str(p) for p in colours.glob("*.png"))
    refs = {p: [os.path.basename(p).split(".")[0]] for p in images}
    captioner = ColourCaptioner()
    report = caption_eval(
        images, ["fake:a"], captioner=captioner, references=refs, load=CountingLoader()
    )
    assert captioner.captioned == 3 and report.captioner == "fake-captioner"
    assert [r.caption for r in report.rows] == [
        "a blue picture",
        "a green picture",
        "a red picture",
    ]
    encoder = FakeEncoder()
    for row in report.rows:
        picture = encoder.encode_images([Image.open(row.image).convert("RGB")])[0]
        cand = encoder.encode_texts([with_prefix(row.caption)])[0]
        ref = encoder.encode_texts([with_prefix(r) for r in refs[row.image]])
        assert row.scores["fake:a"]["CLIP-S"] == pytest.approx(float(clip_score(cand @ picture)))
        assert row.scores["fake:a"]["RefCLIP-S"] == pytest.approx(
            ref_clip_score(cand, picture, ref)
        )
    assert report.correlations == {}  # no ratings given

    red, blue = (str(colours / "red.png"), str(colours / "blue.png"))
    ratings = [
        RatedCaption(red, "red", 4.0),
        RatedCaption(red, "blue", 1.0),
        RatedCaption(blue, "blue", 4.0),
        RatedCaption(blue, "green red", 2.0),
        RatedCaption(blue, "red", 1.0),
    ]
    rated = caption_eval([], ["fake:a"], ratings=ratings, load=CountingLoader())
    assert [r.rating for r in rated.rows] == [4.0, 1.0, 4.0, 2.0, 1.0]
    corr = rated.correlations["fake:a"]["CLIP-S"]
    assert corr.n == 5 and corr.kendall_tau_c > 0.5 and corr.spearman > 0.5
    assert "correlation with human ratings" in rated.to_table()
    json.dumps(rated.to_dict())  # JSON-ready


def test_bench_on_a_collection_with_pseudo_captions(colours: Path, tmp_path: Path):
    config = Config(home=tmp_path / "idx", workers=1, batch_size=2)
    with Collection.open("c", config, create=True, encoder=FakeEncoder()) as coll:
        coll.index([colours])
        captioner = ColourCaptioner()
        report = bench_collection(coll, captioner=captioner, ks=(1,))
        assert (report.images, report.captions) == (3, 3)
        assert report.results[0].metrics.text_to_image == {1: 1.0}
        assert report.results[0].model == "fake"
        bench_collection(coll, captioner=captioner)
        assert captioner.captioned == 3  # captions are stored in the catalog and reused
        given = {str(colours / "red.png"): ["blue"], str(colours / "blue.png"): ["blue"]}
        report = bench_collection(coll, captions=given, ks=(1,))
        assert (report.images, report.captions) == (2, 2)
        assert report.results[0].metrics.text_to_image[1] == 0.5


# --------------------------------------------------------------------------- CLI, fast


def test_cli_usage_errors(tmp_path: Path):
    assert run("bench")[0] == 2
    code, out = run("bench", "toy:5:1", "--json", "--csv")
    assert code == 2 and "choose one of --json and --csv" in out
    code, out = run("bench", "toy:5:1", "--k", "1,x")
    assert code == 2 and "comma-separated" in out
    assert run("bench", "toy:5:1", "--k", "0")[0] == 2
    code, out = run("bench", "--collection", "c")
    assert code == 2 and "--pseudo-captions" in out
    code, out = run("bench", str(tmp_path / "missing.json"), "--cache-dir", str(tmp_path))
    assert code == 1 and "no such dataset" in out and "Traceback" not in out
    assert run("caption-eval", "-m", "toy")[0] == 2
    code, out = run("score", str(solid(tmp_path / "a.png", (1, 2, 3))), "x", "-m", "nonsense")
    assert code == 1 and "cannot parse model spec 'nonsense'" in out


def test_plot_without_matplotlib_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path):
    import searchengine.evaluation.plot as plot

    monkeypatch.setattr(plot, "matplotlib_available", lambda: False)
    code, out = run("bench", "toy:5:1", "--plot", str(tmp_path / "p.png"))
    assert code == 2 and "pip install 'searchengine[plot]'" in out


def test_measure_help_does_not_import_torch():
    code = (
        "from click.testing import CliRunner\n"
        "from searchengine.cli import main\n"
        "for name in ('bench', 'score', 'caption-eval'):\n"
        "    assert CliRunner().invoke(main, [name, '--help']).exit_code == 0\n"
    )
    heavy = ("torch", "open_clip", "transformers", "faiss", "matplotlib", "scipy")
    assert imported_after(code, heavy) == []


# ------------------------------------------------------- CLI with real models, offline


@pytest.mark.slow
def test_bench_cli_on_the_toy_world_with_hub_models(offline_hub, tmp_path: Path):
    from searchengine.models import load_encoder

    cache = str(tmp_path / "cache")
    args = ["bench", "toy:24:4242", "-m", CLIPS, "-m", HF_CLIP, "--cache-dir", cache]
    first = json.loads(run_stdout(*args, "--json", "--plot", str(tmp_path / "r.png")))
    assert [r["model"] for r in first["results"]] == [CLIPS, HF_CLIP]
    assert (first["images"], first["captions"], first["ks"]) == (24, 24, [1, 5, 10])
    assert not any(r["cached"] for r in first["results"])
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    second = json.loads(run_stdout(*args, "--json"))
    assert all(r["cached"] for r in second["results"])
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("cached", "seconds")} for r in rs]  # noqa: E731
    assert strip(second["results"]) == strip(first["results"])
    # The same numbers from embeddings made directly with each model.
    data = load_dataset("toy:24:4242", data_dir=Path(cache) / "datasets")
    for row, spec in zip(first["results"], [CLIPS, HF_CLIP], strict=True):
        encoder = load_encoder(spec, "cpu")
        images = encoder.encode_images([Image.open(p).convert("RGB") for p in data.images])
        texts = encoder.encode_texts(list(data.captions))
        direct = retrieval_metrics(texts, images, data.caption_image).to_dict()
        for key in ("t2i_R@1", "t2i_R@5", "i2t_R@10", "t2i_MRR", "i2t_MRR"):
            assert row[key] == pytest.approx(direct[key], abs=1e-9), key
    csv_out = run_stdout(*args, "--csv").splitlines()
    assert len(csv_out) == 3 and csv_out[1].startswith(f"toy-n24-seed4242,{CLIPS},")
    table = run_stdout(*args)
    assert "toy-n24-seed4242: 24 images, 24 captions" in table and HF_CLIP in table


@pytest.mark.slow
def test_score_cli_with_two_models(offline_hub, tmp_path: Path):
    image = noise(tmp_path / "x.jpg", seed=3)
    out = json.loads(
        run_stdout("score", str(image), "a dog", "a cat", "-m", CLIPS, "-m", HF_CLIP, "--json")
    )
    assert out["models"] == [CLIPS, HF_CLIP]
    assert [c["caption"] for c in out["captions"]] == ["a dog", "a cat"]
    for model in (CLIPS, HF_CLIP):
        scale = out["logit_scale"][model]
        rows = [c["scores"][model] for c in out["captions"]]
        assert sum(r["prob"] for r in rows) == pytest.approx(1.0)
        for r in rows:
            assert r["logit"] == pytest.approx(scale * r["cosine"], rel=1e-5)
            assert 0.0 <= r["clip_score"] <= 2.5
    table = run_stdout("score", str(image), "a dog", "-m", CLIPS, "-m", HF_CLIP)
    assert "B CLIP-S" in table and f"[B] {HF_CLIP}" in table


@pytest.mark.slow
def test_caption_eval_cli_with_blip(offline_hub, tmp_path: Path):
    folder = tmp_path / "photos"
    paths = [noise(folder / f"n{i}.jpg", seed=i) for i in range(3)]
    (tmp_path / "refs.csv").write_text(
        "image,caption\n" + "".join(f"{p},a photo of noise {i}\n" for i, p in enumerate(paths))
    )
    out = json.loads(
        run_stdout(
            "caption-eval",
            str(folder),
            "-m",
            CLIPS,
            "-m",
            HF_CLIP,
            "--refs",
            str(tmp_path / "refs.csv"),
            "--json",
        )
    )
    assert out["captioner"] == BLIP_CAPTION_REPO_ID
    assert [os.path.basename(r["image"]) for r in out["rows"]] == ["n0.jpg", "n1.jpg", "n2.jpg"]
    for row in out["rows"]:
        assert row["caption"] and row["source"] == BLIP_CAPTION_REPO_ID
        assert set(row["scores"]) == {CLIPS, HF_CLIP}
        assert set(row["scores"][CLIPS]) == {"CLIP-S", "RefCLIP-S"}
    rows = "".join(
        f"{p},caption {i},{i % 4 + 1}\n{p},other {i},{(i + 2) % 4 + 1}\n"
        for i, p in enumerate(paths)
    )
    (tmp_path / "ratings.csv").write_text("image,caption,rating\n" + rows)
    out = json.loads(
        run_stdout(
            "caption-eval", "--ratings", str(tmp_path / "ratings.csv"), "-m", CLIPS, "--json"
        )
    )
    assert out["captioner"] is None and len(out["rows"]) == 6
    corr = out["correlations"][CLIPS]["CLIP-S"]
    assert corr["n"] == 6 and -1.0 <= corr["kendall_tau_c"] <= 1.0


@pytest.mark.slow
def test_bench_cli_on_a_collection_with_blip_pseudo_captions(offline_hub, tmp_path: Path):
    photos = tmp_path / "photos"
    for i in range(5):
        noise(photos / f"p{i}.jpg", seed=40 + i)
    idx = ["--index-dir", str(tmp_path / "idx"), "-c", "mine"]
    assert run("index", str(photos), "-m", CLIPS, *idx)[0] == 0
    out = json.loads(
        run_stdout("bench", *idx, "--pseudo-captions", "-m", CLIPS, "-m", HF_CLIP, "--json")
    )
    assert out["images"] == 5 and out["captions"] == 5
    assert [r["model"] for r in out["results"]] == [CLIPS, HF_CLIP]
    assert BLIP_CAPTION_REPO_ID in out["source"]
    assert all(0.0 <= r["t2i_R@1"] <= 1.0 and r["t2i_R@5"] == 1.0 for r in out["results"])


TOY_R10_FLOOR = {"toy": 0.8, "toy-large": 0.9}


@pytest.mark.slow
def test_shipped_toy_models_bench(tmp_path: Path):
    from searchengine.models.spec import SHIPPED_MODELS, shipped_model_dir

    missing = [
        m for m in SHIPPED_MODELS if not (shipped_model_dir(m) / "open_clip_config.json").exists()
    ]
    if missing:
        pytest.skip(f"shipped toy models not built yet: {missing}")
    out = json.loads(
        run_stdout(
            "bench",
            "toy:200:4242",
            "-m",
            "toy",
            "-m",
            "toy-large",
            "--json",
            "--cache-dir",
            str(tmp_path),
        )
    )
    for row in out["results"]:
        assert row["t2i_R@10"] >= TOY_R10_FLOOR[row["model"]], row
