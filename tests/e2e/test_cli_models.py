"""The real CLI with real model code, offline through the fake hub cache.

Covers each model kind's loading path, the incremental pipeline as a user drives it,
and parity: the ranking the CLI prints equals the one computed directly with the
model's own library on the same files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from fakehub import CLIPS_REPO_ID, HF_CLIP_REPO_ID, FakeHub, activate, clips_reference_ids
from imagegen import half_and_half, noise
from PIL import Image

from searchengine.cli import main

pytestmark = pytest.mark.slow

CLIPS = f"hf-hub:{CLIPS_REPO_ID}"
HF_CLIP = f"hf:{HF_CLIP_REPO_ID}"
QUERIES = ["a dog on a beach", "red", "a city at night", "two people"]


def run(*args: str) -> tuple[int, str]:
    """Exit code and stdout+stderr as the user's terminal shows them."""
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def run_stdout(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    for i in range(12):
        noise(folder / ("sub" if i % 3 else "") / f"img{i:02d}.jpg", seed=i)
    noise(folder / "shot.png", seed=99, fmt="PNG")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (folder / "notes.gif").write_text("not a gif")
    return folder


def index_args(tmp_path: Path, *extra: str) -> list[str]:
    return ["--index-dir", str(tmp_path / "idx"), "-c", "t", *extra]


def search_json(tmp_path: Path, query: str, k: int = 20) -> list[dict]:
    return json.loads(run_stdout("search", query, "-k", str(k), "--json", *index_args(tmp_path)))


def test_index_search_status_through_the_cli(offline_hub, photos, tmp_path):
    code, out = run("index", str(photos), "-m", CLIPS, *index_args(tmp_path))
    assert code == 0, out
    assert "added 13, updated 0, moved 0, unchanged 0, removed 0, failed 2" in out
    hits = search_json(tmp_path, "a dog on a beach", k=5)
    assert len(hits) == 5
    assert {"path", "score", "id"} <= set(hits[0])
    assert hits == sorted(hits, key=lambda h: -h["score"])
    code, out = run("status", "--failed", *index_args(tmp_path))
    assert code == 0
    failed = dict(line.split("\t") for line in out.strip().splitlines())
    assert set(map(os.path.basename, failed)) == {"broken.jpg", "notes.gif"}
    assert all(failed.values())
    code, out = run("status", "--json", *index_args(tmp_path))
    info = json.loads(out)
    assert (info["model"], info["images"], info["failed"], info["vectors"]) == (CLIPS, 13, 2, 13)


def test_incremental_reindex_through_the_cli(offline_hub, photos, tmp_path):
    assert run("index", str(photos), "-m", CLIPS, *index_args(tmp_path))[0] == 0
    code, out = run("index", str(photos), *index_args(tmp_path))
    assert "added 0, updated 0, moved 0, unchanged 15, removed 0, failed 0" in out
    noise(photos / "new.jpg", seed=500)
    noise(photos / "img00.jpg", seed=501)  # modified
    os.rename(photos / "sub" / "img01.jpg", photos / "moved.jpg")
    os.remove(photos / "shot.png")
    code, out = run("index", *index_args(tmp_path))  # no PATH: known folders
    assert code == 0, out
    assert "added 1, updated 1, moved 1, unchanged 12, removed 1, failed 0" in out
    paths = {os.path.basename(h["path"]) for h in search_json(tmp_path, "anything", k=100)}
    assert "moved.jpg" in paths and "new.jpg" in paths
    assert "shot.png" not in paths and "img01.jpg" not in paths
    assert len(paths) == 13


def test_model_mismatch_is_refused(offline_hub, photos, tmp_path):
    assert run("index", str(photos), "-m", CLIPS, *index_args(tmp_path))[0] == 0
    code, out = run("index", str(photos), "-m", HF_CLIP, *index_args(tmp_path))
    assert code == 1
    assert f"was built with {CLIPS}" in out and "--collection NEW_NAME" in out
    code, out = run("search", "x", "-m", HF_CLIP, *index_args(tmp_path))
    assert code == 1 and "was built with" in out


def test_exif_rotation_is_applied_before_embedding(offline_hub, tmp_path):
    folder = tmp_path / "rot"
    # The same scene twice: once with the pixels stored upright, once stored sideways
    # with an EXIF tag saying "rotate 90° clockwise". Upright, they must embed alike.
    sideways = half_and_half(folder / "tagged.jpg", (220, 30, 30), (30, 30, 220), orientation=6)
    upright = Image.open(sideways)
    upright = upright.transpose(Image.Transpose.ROTATE_270)
    upright.save(folder / "upright.jpg", quality=95)
    half_and_half(folder / "wrong.jpg", (220, 30, 30), (30, 30, 220))  # no tag: sideways
    assert run("index", str(folder), "-m", CLIPS, *index_args(tmp_path))[0] == 0
    code, out = run("similar", str(folder / "upright.jpg"), "--json", *index_args(tmp_path))
    assert code == 0, out
    hits = json.loads(out)
    assert os.path.basename(hits[0]["path"]) == "tagged.jpg"
    assert hits[0]["width"] == 40 and hits[0]["height"] == 60


@pytest.mark.parametrize("spec", [CLIPS, HF_CLIP])
def test_pipeline_parity_with_the_models_own_library(offline_hub, photos, tmp_path, spec):
    assert run("index", str(photos), "-m", spec, *index_args(tmp_path))[0] == 0
    files = [*sorted(photos.rglob("img*.jpg")), photos / "shot.png"]
    image_vecs, text_vecs = direct_embeddings(spec, files, QUERIES)
    for query, text_vec in zip(QUERIES, text_vecs, strict=True):
        ours = search_json(tmp_path, query, k=len(files))
        direct = {str(f): float(s) for f, s in zip(files, image_vecs @ text_vec, strict=True)}
        assert [h["path"] for h in ours] == sorted(direct, key=lambda p: -direct[p]), query
        for hit in ours:
            assert hit["score"] == pytest.approx(direct[hit["path"]], abs=1e-4)


def direct_embeddings(spec: str, files: list[Path], texts: list[str]):
    """Embed with open_clip or transformers directly, as their docs show.

    CLIPS texts go in as the CLIPS authors laid them out (``clips_reference_ids``):
    open_clip's own tokenizer gets the published configs wrong.
    """
    import open_clip
    import torch
    from huggingface_hub import hf_hub_download

    images = [Image.open(f).convert("RGB") for f in files]
    with torch.no_grad():
        if spec.startswith("hf-hub:"):
            model, _, preprocess = open_clip.create_model_and_transforms(spec)
            model.eval()
            vocab = Path(hf_hub_download(spec.removeprefix("hf-hub:"), "vocab.txt"))
            tokens = torch.tensor(clips_reference_ids(vocab, texts))
            img = model.encode_image(torch.stack([preprocess(im) for im in images]))
            txt = model.encode_text(tokens)
        else:
            from transformers import CLIPModel, CLIPProcessor

            repo = spec.removeprefix("hf:")
            model = CLIPModel.from_pretrained(repo).eval()
            processor = CLIPProcessor.from_pretrained(repo)
            inputs = processor(text=texts, images=images, return_tensors="pt", padding=True)
            out = model(**inputs)
            img, txt = out.image_embeds, out.text_embeds
    img = torch.nn.functional.normalize(img.float(), dim=-1).numpy()
    txt = torch.nn.functional.normalize(txt.float(), dim=-1).numpy()
    return np.asarray(img), np.asarray(txt)


def test_missing_weights_say_how_to_fix_it(empty_offline_hub, photos, tmp_path):
    for spec in (CLIPS, HF_CLIP, "ViT-B-32:openai"):
        code, out = run(
            "index",
            str(photos),
            "-m",
            spec,
            "-c",
            f"m{abs(hash(spec))}",
            "--index-dir",
            str(tmp_path / "idx"),
        )
        assert code == 1, (spec, out)
        lines = out.strip().splitlines()
        assert len(lines) == 1, out
        assert "not in the local Hugging Face cache" in out and "HF_HUB_OFFLINE" in out
        repo = {
            CLIPS: CLIPS_REPO_ID,
            HF_CLIP: HF_CLIP_REPO_ID,
            "ViT-B-32:openai": "timm/vit_base_patch32_clip_224.openai",
        }[spec]
        # The repo and file, and the command that fetches them.
        assert f"{repo} (" in out and f"download {repo}" in out, out


def test_the_installed_command_runs_in_a_fresh_process(offline_hub_env, photos, tmp_path):
    exe = Path(sys.executable).with_name("searchengine")
    args = [str(exe), "index", str(photos), "-m", CLIPS, *index_args(tmp_path)]
    done = subprocess.run(args, env=offline_hub_env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "added 13" in done.stdout
    args = [str(exe), "search", "red", "-k", "3", *index_args(tmp_path)]
    done = subprocess.run(args, env=offline_hub_env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 3 and all(Path(line.split("  ")[1]).exists() for line in lines)


def test_rerank_under_a_second_model_through_the_cli(offline_hub, photos, tmp_path):
    code, out = run("index", str(photos), "-m", HF_CLIP, "-m", CLIPS, *index_args(tmp_path))
    assert code == 0, out
    assert f"cached 13 new {CLIPS} vectors for reranking" in out
    args = ["a dog on a beach", "-k", "5", "--rerank", CLIPS, "--candidates", "13", "--json"]
    hits = json.loads(run_stdout("search", *args, *index_args(tmp_path)))
    assert len(hits) == 5
    assert all(h["score"] == h["clip_score"] for h in hits)
    assert [h["clip_score"] for h in hits] == sorted((h["clip_score"] for h in hits), reverse=True)
    # The CLIPScore is the CLIPS model's own: check one against a direct computation.
    image_vecs, text_vecs = direct_embeddings(
        CLIPS, [Path(hits[0]["path"])], ["A photo depicts a dog on a beach"]
    )
    expected = 2.5 * max(float(image_vecs[0] @ text_vecs[0]), 0.0)
    assert hits[0]["clip_score"] == pytest.approx(expected, abs=1e-4)
    plain = run_stdout("search", "a dog on a beach", "-k", "3", *index_args(tmp_path))
    assert all("cos " in line and "clip " in line for line in plain.strip().splitlines())


def test_config_cached_without_weights_is_a_clear_error(fake_hub, photos, tmp_path, monkeypatch):
    """open_clip would build a random model from a config alone; we refuse instead."""
    import shutil

    hf_home = tmp_path / "partial_hf_home"
    shutil.copytree(fake_hub.hf_home, hf_home, symlinks=True)
    for weights in hf_home.glob("hub/models--UCSC-VLAA--*/snapshots/*/open_clip_*model*"):
        weights.unlink()
    activate(monkeypatch, hf_home)
    code, out = run("index", str(photos), "-m", CLIPS, *index_args(tmp_path))
    assert code == 1
    assert "not in the local Hugging Face cache" in out and "Traceback" not in out
    assert f"{CLIPS_REPO_ID} (open_clip_model.safetensors or open_clip_pytorch_model.bin)" in out


ODD_QUERIES = [
    "\U0001f436 on a beach \U0001f3d6\ufe0f",
    "\u732b\u304c\u5bdd\u3066\u3044\u308b",
    "\u0441\u043e\u0431\u0430\u043a\u0430 \u043d\u0430 \u043f\u043b\u044f\u0436\u0435",
    "\u0645\u0631\u062d\u0628\u0627 \u200f\u0628\u0627\u0644\u0639\u0627\u0644\u0645",
    "\x1b[31mred\x1b[0m \x00 car\x07",
    "word " * 300,  # far past the context length: truncated by the tokenizer
    "\u0301\u0301\u0301 combining marks",
]


@pytest.mark.parametrize("spec", [CLIPS, HF_CLIP])
def test_odd_queries_through_real_tokenizers(offline_hub, photos, tmp_path, spec):
    assert run("index", str(photos), "-m", spec, *index_args(tmp_path))[0] == 0
    for query in ODD_QUERIES:
        hits = search_json(tmp_path, query, k=3)
        assert len(hits) == 3, query
    for query in ["", "   \n\t", "x" * 5000]:
        code, out = run("search", query, *index_args(tmp_path))
        assert code == 1 and len(out.strip().splitlines()) == 1, (query[:20], out)
        assert "Traceback" not in out


# ------------------------------------------- every command, on each published CLIPS layout


@pytest.mark.parametrize("layout", ["bert", "clips"])
def test_every_command_on_each_clips_layout(
    clips_hubs: dict[str, FakeHub], photos, tmp_path, monkeypatch, layout: str
):
    """index, search (+ --rerank), similar, score, bench and the server, on one cache each.

    The "clips" cache holds the CLIPS repo alone (its tokenizer inside it); the "bert" one
    also ``bert-base-uncased``, where the first layout's tokenizer lives.
    """
    from fastapi.testclient import TestClient

    from searchengine import Collection, Config
    from searchengine.server import create_app

    activate(monkeypatch, clips_hubs[layout].hf_home)
    idx = index_args(tmp_path)
    code, out = run("index", str(photos), "-m", CLIPS, *idx)
    assert code == 0 and "added 13" in out, out
    files = [*sorted(photos.rglob("img*.jpg")), photos / "shot.png"]
    queries = ["a dog on a beach", "Red!"]
    captions = [f"A photo depicts {q}" for q in queries]
    image_vecs, text_vecs = direct_embeddings(CLIPS, files, queries + captions)

    for i, query in enumerate(queries):
        direct = {str(f): float(s) for f, s in zip(files, image_vecs @ text_vecs[i], strict=True)}
        hits = search_json(tmp_path, query, k=len(files))
        assert [h["path"] for h in hits] == sorted(direct, key=lambda p: -direct[p]), query
        reranked = json.loads(
            run_stdout("search", query, "--rerank", "-k", "3", "--json", *index_args(tmp_path))
        )
        clip_s = {
            str(f): 2.5 * max(float(s), 0)
            for f, s in zip(files, image_vecs @ text_vecs[i + 2], strict=True)
        }
        for hit in reranked:
            assert hit["clip_score"] == pytest.approx(clip_s[hit["path"]], abs=2e-3)

    similar = json.loads(run_stdout("similar", str(files[0]), "--json", *idx))
    alike = {str(f): float(s) for f, s in zip(files, image_vecs @ image_vecs[0], strict=True)}
    assert str(files[0]) not in {h["path"] for h in similar}  # more like it, not itself
    for hit in similar:
        assert hit["score"] == pytest.approx(alike[hit["path"]], abs=2e-3)

    scored = json.loads(run_stdout("score", str(files[1]), queries[0], "-m", CLIPS, "--json"))
    cosine = scored["captions"][0]["scores"][CLIPS]["cosine"]
    assert cosine == pytest.approx(float(image_vecs[1] @ text_vecs[0]), abs=2e-3)

    bench = json.loads(
        run_stdout("bench", "toy:12:7", "-m", CLIPS, "--no-cache", "--json", "--batch-size", "8")
    )
    assert [r["model"] for r in bench["results"]] == [CLIPS]

    config = Config(home=tmp_path / "idx", device="cpu")
    with Collection.open("t", config) as collection:
        app = create_app(collection, warm_up=True)
        with TestClient(app, base_url="http://127.0.0.1:8765") as client:
            page = client.get("/api/search", params={"q": queries[0], "k": 5}).json()
    assert [r["path"] for r in page["results"]] == [
        h["path"] for h in search_json(tmp_path, queries[0], k=5)
    ]
