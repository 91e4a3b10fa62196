"""BLIP captions and visual question answering, offline through the fake hub cache.

The BLIP repos are tiny and random, so captions are gibberish: these tests assert what
holds for any model (one text per image, the same text for the same image, a different
one for a different image, the text transformers itself decodes) and what a user of the
cache notices (a second search does not run BLIP again; a changed file is re-captioned).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from fakehub import (
    BLIP_CAPTION_REPO_ID,
    BLIP_VQA_REPO_ID,
    HF_CLIP_REPO_ID,
    FakeHub,
    RepoSpec,
    activate,
    blip_caption_repo,
    build_fake_hub,
    write_cached_repo,
)
from imagegen import noise, solid
from PIL import Image
from transformers import BlipForConditionalGeneration, BlipForQuestionAnswering, BlipProcessor

from searchengine import Collection, Config
from searchengine.captions import caption_files, load_answerer, load_captioner
from searchengine.cli import main
from searchengine.derived import DerivedCache
from searchengine.ingest.decode import decode_file
from searchengine.models.blip import ANSWER_GENERATION, CAPTION_GENERATION
from searchengine.models.loading import download_command

pytestmark = pytest.mark.slow

HF_CLIP = f"hf:{HF_CLIP_REPO_ID}"
ORIENTATION = 0x0112


def run(*args: str) -> tuple[int, str]:
    """Exit code and stdout+stderr as the user's terminal shows them."""
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def run_json(*args: str) -> object:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


class GenerateCalls:
    """Counts BLIP ``generate`` calls and the images each one was given."""

    def __init__(self) -> None:
        self.images: list[int] = []

    @property
    def calls(self) -> int:
        return len(self.images)


@pytest.fixture
def generate_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[GenerateCalls]:
    calls = GenerateCalls()
    real = BlipForConditionalGeneration.generate

    def counting(self, pixel_values, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.images.append(int(pixel_values.shape[0]))
        return real(self, pixel_values, *args, **kwargs)

    monkeypatch.setattr(BlipForConditionalGeneration, "generate", counting)
    yield calls


def _images(folder: Path) -> list[Path]:
    paths = [noise(folder / f"noise{i}.jpg", seed=i) for i in range(3)]
    paths.append(solid(folder / "red.png", (220, 20, 20)))
    return paths


def _direct(repo: Path, images: list[Image.Image]) -> list[str]:
    """What transformers itself generates and decodes, with our generation settings."""
    processor = BlipProcessor.from_pretrained(repo)
    model = BlipForConditionalGeneration.from_pretrained(repo).eval()
    with torch.inference_mode():
        ids = model.generate(**processor(images=images, return_tensors="pt"), **CAPTION_GENERATION)
    return [" ".join(t.split()) for t in processor.batch_decode(ids, skip_special_tokens=True)]


# ------------------------------------------------------------------------- the models


def test_captions_are_one_deterministic_text_per_image(offline_hub: FakeHub, tmp_path: Path):
    images = [decode_file(str(p)).image for p in _images(tmp_path)]
    captioner = load_captioner()
    assert captioner.model == BLIP_CAPTION_REPO_ID
    first = captioner.caption(images)
    assert len(first) == len(images)
    assert all(isinstance(c, str) and c.strip() == c and c for c in first)
    assert captioner.caption(images) == first  # deterministic decoding
    assert [captioner.caption([im])[0] for im in images] == first  # batching changes nothing
    # Different pictures, different captions: the pixels reached the decoder.
    assert len(set(first)) == len(first)
    snapshot = offline_hub.repos[BLIP_CAPTION_REPO_ID].snapshot
    assert first == _direct(snapshot, images)
    captioner.close()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_captions_on_cuda(offline_hub: FakeHub, tmp_path: Path):
    images = [decode_file(str(p)).image for p in _images(tmp_path)]
    captioner = load_captioner(device="cuda")  # generates under fp16/bf16 autocast
    assert captioner.device == "cuda"
    captions = captioner.caption(images)
    assert len(captions) == len(images) and all(captions)
    assert captioner.caption(images) == captions


def test_answers_match_transformers(offline_hub: FakeHub, tmp_path: Path):
    image = decode_file(str(noise(tmp_path / "a.jpg", seed=3))).image
    question = "Where is the dog in the image?"
    answerer = load_answerer()
    assert answerer.model == BLIP_VQA_REPO_ID
    answer = answerer.answer(image, question)
    assert answer and answer == answerer.answer(image, question)

    snapshot = offline_hub.repos[BLIP_VQA_REPO_ID].snapshot
    processor = BlipProcessor.from_pretrained(snapshot)
    model = BlipForQuestionAnswering.from_pretrained(snapshot).eval()
    with torch.inference_mode():
        ids = model.generate(
            **processor(images=image, text=question, return_tensors="pt"), **ANSWER_GENERATION
        )
    assert answer == " ".join(processor.decode(ids[0], skip_special_tokens=True).split())


def test_files_are_captioned_upright(offline_hub: FakeHub, tmp_path: Path):
    # The same pixels stored sideways with an EXIF "rotate 90° clockwise" tag, and stored
    # upright: lossless PNG, so decoded they are identical and so must their captions be.
    upright = Image.open(noise(tmp_path / "upright.png", seed=5, fmt="PNG"))
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    upright.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "tagged.png", exif=exif)
    upright.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "sideways.png")
    names = ["upright.png", "tagged.png", "sideways.png"]
    got = caption_files([tmp_path / n for n in names])
    assert [c.path for c in got] == [str(tmp_path / n) for n in names]
    assert {c.model for c in got} == {BLIP_CAPTION_REPO_ID}
    assert got[0].caption == got[1].caption != got[2].caption


# ------------------------------------------------------------------- the command line


def test_caption_command(offline_hub: FakeHub, tmp_path: Path):
    paths = [str(p) for p in _images(tmp_path)]
    items = run_json("caption", *paths, "--json")
    assert isinstance(items, list)
    assert [i["path"] for i in items] == paths
    assert all(i["caption"] and i["model"] == BLIP_CAPTION_REPO_ID for i in items)
    code, out = run("caption", *paths)
    assert code == 0
    assert out.splitlines() == [f"{i['path']}\t{i['caption']}" for i in items]


def test_ask_command(offline_hub: FakeHub, tmp_path: Path):
    image = str(noise(tmp_path / "dog.jpg", seed=7))
    reply = run_json("ask", image, "Where is the dog in the image?", "--json")
    assert isinstance(reply, dict)
    assert reply["path"] == image and reply["question"] == "Where is the dog in the image?"
    assert reply["model"] == BLIP_VQA_REPO_ID and reply["answer"]
    code, out = run("ask", image, "Where is the dog in the image?")
    assert (code, out) == (0, reply["answer"] + "\n")


@pytest.mark.parametrize(
    "args",
    [
        ["caption", "{img}"],
        ["ask", "{img}", "what is this?"],
        ["caption", "{img}", "--model", "Salesforce/blip-image-captioning-large"],
    ],
)
def test_missing_weights_is_one_line(empty_offline_hub: FakeHub, tmp_path: Path, args: list[str]):
    image = str(noise(tmp_path / "x.jpg", seed=1))
    code, out = run(*[a.format(img=image) for a in args])
    assert code == 1
    assert len(out.strip().splitlines()) == 1, out
    assert "not in the local Hugging Face cache" in out and "HF_HUB_OFFLINE" in out
    assert "Traceback" not in out


def test_weights_missing_from_a_cached_repo_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # config.json cached but not the weights (a download cut short): transformers says
    # only that the repo "does not appear to have" them; the cache check names the fix.
    repo = blip_caption_repo()
    files = {n: data for n, data in repo.files.items() if n != "pytorch_model.bin"}
    hub = build_fake_hub(tmp_path / "hf_home", builders=())
    write_cached_repo(hub.hub_cache, RepoSpec(repo.repo_id, files))
    activate(monkeypatch, hub.hf_home)
    code, out = run("caption", str(noise(tmp_path / "x.jpg", seed=1)))
    assert code == 1 and len(out.strip().splitlines()) == 1, out
    weights = "(model.safetensors or pytorch_model.bin)"
    assert f"{BLIP_CAPTION_REPO_ID} {weights} is not in the local Hugging Face cache" in out
    assert f"`{download_command(BLIP_CAPTION_REPO_ID)}`" in out


def test_bad_input_is_one_line(offline_hub: FakeHub, tmp_path: Path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    code, out = run("caption", str(broken))
    assert code == 1 and out.startswith(f"Error: cannot caption {broken}:")
    image = str(noise(tmp_path / "ok.jpg", seed=2))
    code, out = run("ask", image, "   ")
    assert code == 1 and "the question is empty" in out
    code, out = run("caption", image, "--model", "not a repo")
    assert code == 1 and "neither a local folder nor a hub repo id" in out
    code, out = run("caption", image, "--model", str(tmp_path))  # a folder without a model
    assert code == 1 and len(out.strip().splitlines()) == 1
    assert f"cannot load {tmp_path} as a BlipForConditionalGeneration" in out


# --------------------------------------------------------------- captions in a collection


@pytest.fixture
def indexed(offline_hub: FakeHub, tmp_path: Path) -> tuple[Path, list[str]]:
    photos = tmp_path / "photos"
    for i in range(6):
        noise(photos / f"img{i}.jpg", seed=10 + i)
    args = ["--index-dir", str(tmp_path / "idx"), "-c", "t"]
    code, out = run("index", str(photos), "-m", HF_CLIP, *args)
    assert code == 0, out
    return photos, args


def _stored(tmp_path: Path, model: str) -> dict[int, str]:
    config = Config(home=tmp_path / "idx")
    with Collection.open("t", config) as coll:
        ids = [r.id for r in coll.catalog.records()]
        return DerivedCache(coll.catalog).captions(ids, model)


def test_search_captions_are_stored_and_reused(indexed, tmp_path: Path, generate_calls):
    _, args = indexed
    hits = run_json("search", "a dog", "-k", "3", "--caption", "--json", *args)
    assert isinstance(hits, list) and len(hits) == 3
    assert all(h["caption"] for h in hits)
    assert sum(generate_calls.images) == 3
    stored = _stored(tmp_path, BLIP_CAPTION_REPO_ID)
    assert stored == {h["id"]: h["caption"] for h in hits}
    expected = caption_files([h["path"] for h in hits])
    assert [h["caption"] for h in hits] == [c.caption for c in expected]
    before = generate_calls.calls

    # Same results again (JSON and text output): served from the catalog, BLIP idle.
    assert run_json("search", "a dog", "-k", "3", "--caption", "--json", *args) == hits
    code, out = run("search", "a dog", "-k", "3", "--caption", *args)
    assert code == 0 and all(f"        {h['caption']}" in out.splitlines() for h in hits)
    assert generate_calls.calls == before

    # One file changes; after re-indexing only it is captioned again, with its new content.
    changed = hits[0]
    noise(Path(changed["path"]), seed=99)
    assert run("index", *args)[0] == 0
    again = run_json("search", "a dog", "-k", "6", "--caption", "--json", *args)
    assert isinstance(again, list)
    by_path = {h["path"]: h["caption"] for h in again}
    assert generate_calls.images[before:] == [4]  # the changed file and the 3 never captioned
    assert by_path[changed["path"]] != changed["caption"]
    assert by_path[changed["path"]] == caption_files([changed["path"]])[0].caption
    assert all(by_path[h["path"]] == h["caption"] for h in hits[1:])


def test_captions_are_kept_per_model(indexed, tmp_path: Path, offline_hub: FakeHub):
    _, args = indexed
    # The same weights in a local folder are another model as far as the cache knows.
    folder = tmp_path / "my-blip"
    shutil.copytree(offline_hub.repos[BLIP_CAPTION_REPO_ID].snapshot, folder)
    hub = run_json("search", "a dog", "-k", "2", "--caption", "--json", *args)
    local = run_json("search", "a dog", "-k", "2", "--caption", str(folder), "--json", *args)
    assert isinstance(hub, list) and isinstance(local, list)
    assert [h["caption"] for h in hub] == [h["caption"] for h in local]
    assert set(_stored(tmp_path, BLIP_CAPTION_REPO_ID)) == {h["id"] for h in hub}
    assert set(_stored(tmp_path, str(folder))) == {h["id"] for h in local}


class SizeCaptioner:
    """A fake captioner: any object with this shape can caption a collection."""

    model = "fake-size-captioner"
    device = "cpu"

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        return [f"{im.width}x{im.height} pixels" for im in images]

    def close(self) -> None:
        pass


def test_collection_caption_api(indexed, tmp_path: Path, generate_calls):
    with Collection.open("t", Config(home=tmp_path / "idx")) as coll:
        results = coll.search("a dog", k=2, caption=True)
        assert all(r.caption for r in results)
        assert generate_calls.images == [2]
        shown = {r.id for r in results}
        gone = next(r for r in coll.catalog.records() if r.id not in shown)
        os.remove(gone.path)
        ids = [r.id for r in coll.catalog.records()]
        # An unknown id, and a file that can no longer be read, get no caption.
        captions = coll.caption([*ids, 10_000])
        assert set(captions) == set(ids) - {gone.id}
        assert all(captions[r.id] == r.caption for r in results)
        assert generate_calls.images == [2, 3]
        assert coll.caption(results, model=BLIP_CAPTION_REPO_ID) == {
            r.id: r.caption for r in results
        }
        fake = coll.search("a dog", k=2, caption=SizeCaptioner())
        assert [r.caption for r in fake] == ["96x72 pixels"] * 2
        assert generate_calls.images == [2, 3]
        stored = DerivedCache(coll.catalog).captions(ids, SizeCaptioner.model)
        assert stored == {r.id: "96x72 pixels" for r in fake}


def test_search_with_missing_captioner_is_one_line(indexed):
    _, args = indexed
    code, out = run("search", "x", "--caption", "Salesforce/blip-image-captioning-large", *args)
    assert code == 1
    assert len(out.strip().splitlines()) == 1
    assert "Salesforce/blip-image-captioning-large (config.json) is not in the local" in out
