"""Real models load and score offline exactly as they will on a user's machine.

The repos are ``tests/fakehub.py``'s, rebuilt from the public repos' file lists and configs;
the caches are filled by the installed hub client itself from a local hub (``localhub.py``):
as ``hf download`` leaves them, as a first online run leaves them, and copied to another
``HF_HOME``. Both published CLIPS layouts are covered:

- ``"bert"``: ``hf_tokenizer_name: "bert-base-uncased"``, ``strip_sep_token``, no
  ``tokenizer_mode`` (and stock open_clip tokenizes it as plain BERT: wrong vectors);
- ``"clips"``: ``tokenizer_mode: "clips"`` with the tokenizer inside the repo (and stock
  open_clip cannot even load that tokenizer offline after ``hf download``).

The CLIPS token ids are checked against the layout the CLIPS authors trained with
(CLIPS repo ``open_clip/tokenizer.py`` at f0c8140; open_clip PR #1081): ``[1] + ids[:77] + [2]``,
0-padded to 79, ``101`` last, computed independently (``fakehub.clips_reference_ids``) with
``BertWordPieceTokenizer`` over the cached ``vocab.txt``, as the CLIPS authors' code does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from click.testing import CliRunner
from fakehub import (
    BERT_REPO_ID,
    BLIP_CAPTION_REPO_ID,
    BLIP_VQA_REPO_ID,
    CLIPS,
    CLIPS_H14_REPO_ID,
    CLIPS_REPO_ID,
    HF_CLIP,
    HF_CLIP_REPO_ID,
    FakeHub,
    RepoSpec,
    activate,
    bert_base_uncased_repo,
    build_fake_hub,
    clips_h14_repo,
    clips_reference_ids,
    clips_repo,
    copy_hf_home,
    go_online,
)
from localhub import LocalHub
from PIL import Image

from searchengine.cli import main
from searchengine.errors import WeightsUnavailableError
from searchengine.evaluation import score_captions
from searchengine.ingest.decode import decode_file
from searchengine.models import load_encoder
from searchengine.models.loading import download_command
from searchengine.models.onnx import OnnxClipEncoder

CLIPS_SPEC = f"hf-hub:{CLIPS_REPO_ID}"
LAYOUTS = ("bert", "clips")
# Short, long, truncated at 80, punctuation, capitals, unknown characters, empty.
TEXTS = [
    "a dog",
    "kids building a sandcastle on the beach with a red and yellow dog on the left",
    "red circle " * 60,
    "Hello, world! (really?) -- 3.14; x/y & z...",
    "A RED Circle ON THE Left",
    "naïve café 東京 🐶",
    "",
]


def reference_ids(vocab_txt: Path, texts: list[str]) -> np.ndarray:
    return np.asarray(clips_reference_ids(vocab_txt, texts), dtype=np.int64)


def vocab_of(hub: FakeHub) -> Path:
    return hub.repos[CLIPS_REPO_ID].snapshot / "vocab.txt"


def _image(path: Path, seed: int = 0) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (60, 90, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


# ----------------------------------------------------- the fakes reproduce the real problems


def test_stock_open_clip_tokenizes_the_first_layout_as_plain_bert(
    clips_hubs: dict[str, FakeHub], monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a user of open_clip 3.3 gets from the repo as first published: [CLS] ... with the
    # [SEP] zeroed, padding in the last slot the tower pools. This is the bug we avoid.
    activate(monkeypatch, clips_hubs["bert"].hf_home)
    ids = open_clip.get_tokenizer(CLIPS_SPEC)(["a dog"])[0].tolist()
    assert ids[0] == 101 and ids[-1] == 0 and 1 not in ids and 2 not in ids


def test_stock_open_clip_cannot_load_the_second_layouts_tokenizer_offline(
    clips_hubs: dict[str, FakeHub], monkeypatch: pytest.MonkeyPatch
) -> None:
    # After `hf download`, transformers asks for a config.json the repo does not have and
    # that no online run recorded as missing: offline, the tokenizer does not load at all.
    activate(monkeypatch, clips_hubs["clips"].hf_home)
    open_clip.create_model_and_transforms(CLIPS_SPEC, require_pretrained=True)  # model is fine
    with pytest.raises(OSError, match="couldn't connect"):
        open_clip.get_tokenizer(CLIPS_SPEC)


# ------------------------------------------------------------ CLIPS tokens, both runtimes


def _direct_text_vectors(tokens: np.ndarray) -> np.ndarray:
    """open_clip's own text tower on the given ids, normalised."""
    model, _, _ = open_clip.create_model_and_transforms(CLIPS_SPEC)
    with torch.no_grad():
        return model.eval().encode_text(torch.from_numpy(tokens), normalize=True).numpy()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_clips_token_ids_are_the_reference_in_torch(
    clips_hubs: dict[str, FakeHub], monkeypatch: pytest.MonkeyPatch, layout: str
) -> None:
    hub = clips_hubs[layout]
    activate(monkeypatch, hub.hf_home)
    expected = reference_ids(vocab_of(hub), TEXTS)
    # Spelled out for two texts, so the reference itself cannot drift.
    vocab = vocab_of(hub).read_text().splitlines()
    assert expected[0][:4].tolist() == [1, vocab.index("a"), vocab.index("dog"), 2]
    assert expected[2][77:].tolist() == [vocab.index("red"), 2, 101]  # truncated at 80
    encoder = load_encoder(CLIPS_SPEC, "cpu", "torch")
    np.testing.assert_array_equal(encoder._tokenizer(TEXTS).numpy(), expected)
    # And the vectors are the text tower on exactly those ids.
    direct = _direct_text_vectors(expected)
    np.testing.assert_allclose(encoder.encode_texts(TEXTS), direct, atol=1e-5)
    encoder.close()


@pytest.mark.slow
@pytest.mark.parametrize("layout", LAYOUTS)
def test_clips_token_ids_are_the_reference_in_onnx(
    clips_hubs: dict[str, FakeHub], monkeypatch: pytest.MonkeyPatch, layout: str
) -> None:
    hub = clips_hubs[layout]
    activate(monkeypatch, hub.hf_home)
    expected = reference_ids(vocab_of(hub), TEXTS)
    onnx = load_encoder(CLIPS_SPEC, "cpu", "onnx")
    assert isinstance(onnx, OnnxClipEncoder) and onnx._manifest["tokenizer"]["kind"] == "clips"
    np.testing.assert_array_equal(onnx.tokenize(TEXTS), expected)
    np.testing.assert_allclose(onnx.encode_texts(TEXTS), _direct_text_vectors(expected), atol=1e-3)
    onnx.close()


@pytest.mark.slow
@pytest.mark.parametrize("layout", LAYOUTS)
def test_score_cosine_equals_open_clip_on_the_reference_tokens(
    clips_hubs: dict[str, FakeHub],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    layout: str,
) -> None:
    hub = clips_hubs[layout]
    activate(monkeypatch, hub.hf_home)
    image = _image(tmp_path / "photo.png")
    captions = ["a red circle on the left", "A DOG, on a beach!"]
    model, _, preprocess = open_clip.create_model_and_transforms(CLIPS_SPEC)
    tokens = reference_ids(vocab_of(hub), [*captions, *(f"A photo depicts {c}" for c in captions)])
    with torch.no_grad():
        img = model.eval().encode_image(preprocess(decode_file(str(image)).image)[None])
        txt = model.encode_text(torch.from_numpy(tokens))
    img = torch.nn.functional.normalize(img, dim=-1)
    txt = torch.nn.functional.normalize(txt, dim=-1)
    cosines = (txt @ img.T)[:, 0].tolist()

    # The CLI (auto runtime: ONNX on this CPU) and the library on torch.
    result = CliRunner().invoke(
        main, ["score", str(image), *captions, "-m", CLIPS_SPEC, "--json"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["captions"]
    table = score_captions(
        image, captions, [CLIPS_SPEC], device="cpu", load=lambda s, d: load_encoder(s, d, "torch")
    )
    for i, caption in enumerate(captions):
        cli = rows[i]["scores"][CLIPS_SPEC]
        assert cli["cosine"] == pytest.approx(cosines[i], abs=2e-3)
        assert cli["clip_score"] == pytest.approx(2.5 * max(cosines[i + 2], 0), abs=5e-3)
        lib = table.get(i, CLIPS_SPEC)
        assert lib.caption == caption
        assert lib.cosine == pytest.approx(cosines[i], abs=1e-5)
        assert lib.clip_score == pytest.approx(2.5 * max(cosines[i + 2], 0), abs=1e-5)


@pytest.mark.slow
def test_the_h14_repo_and_a_renamed_local_copy_are_clips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = build_fake_hub(tmp_path / "hf", builders=(clips_h14_repo, bert_base_uncased_repo))
    activate(monkeypatch, hub.hf_home)
    expected = reference_ids(hub.repos[CLIPS_H14_REPO_ID].snapshot / "vocab.txt", TEXTS[:3])
    encoder = load_encoder(f"hf-hub:{CLIPS_H14_REPO_ID}", "cpu", "torch")
    np.testing.assert_array_equal(encoder._tokenizer(TEXTS[:3]).numpy(), expected)
    # A copy of the snapshot in a folder whose name says nothing: the config still does.
    folder = tmp_path / "models" / "reranker"
    folder.parent.mkdir()
    import shutil

    shutil.copytree(hub.repos[CLIPS_H14_REPO_ID].snapshot, folder, symlinks=False)
    local = load_encoder(f"local-dir:{folder}", "cpu", "torch")
    np.testing.assert_array_equal(local._tokenizer(TEXTS[:3]).numpy(), expected)
    np.testing.assert_allclose(local.encode_texts(TEXTS[:3]), encoder.encode_texts(TEXTS[:3]))


def test_a_layout_that_cannot_be_tokenized_right_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = clips_repo("clips")
    config = json.loads(base.files["open_clip_config.json"])
    config["model_cfg"]["text_cfg"]["tokenizer_mode"] = "clips_v2"
    files = {**base.files, "open_clip_config.json": json.dumps(config).encode()}
    hub = build_fake_hub(tmp_path / "hf", builders=(lambda: RepoSpec(base.repo_id, files),))
    activate(monkeypatch, hub.hf_home)
    image = _image(tmp_path / "x.png")
    result = CliRunner().invoke(main, ["score", str(image), "a dog", "-m", CLIPS_SPEC])
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert "tokenizer_mode 'clips_v2'" in result.output and "refusing" in result.output


# --------------------------------------------------- caches in every state a user makes


def _online_first_run(specs: list, hf_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Load CLIPS online from a local hub, as a user's first run does, then go offline."""
    with LocalHub(specs) as hub, monkeypatch.context() as online:
        go_online(online, hf_home, hub)
        load_encoder(CLIPS_SPEC, "cpu", "torch").close()
    assert hub.requests  # it did download


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("state", ["online", "copied", "copied-without-links"])
def test_clips_loads_offline_from_every_cache_state(
    clips_hubs: dict[str, FakeHub],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    layout: str,
    state: str,
) -> None:
    source = clips_hubs[layout]  # "hf download" state; the other tests cover it
    if state == "online":
        hf_home = tmp_path / "hf_home"
        _online_first_run(list(source.specs.values()), hf_home, monkeypatch)
        no_exist = hf_home / "hub" / f"models--{CLIPS_REPO_ID.replace('/', '--')}" / ".no_exist"
        # open_clip asked for the safetensors weights the repo does not have.
        assert any(p.name == "open_clip_model.safetensors" for p in no_exist.rglob("*"))
    else:
        hf_home = copy_hf_home(source.hf_home, tmp_path / "copy", keep_links=state == "copied")
    with LocalHub(list(source.specs.values())) as hub:
        activate(monkeypatch, hf_home)
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)  # were anything to go online, here
        encoder = load_encoder(CLIPS_SPEC, "cpu", "torch")
        tokens = encoder._tokenizer(TEXTS).numpy()
        vectors = encoder.encode_texts(TEXTS)
    assert hub.requests == []
    np.testing.assert_array_equal(tokens, reference_ids(vocab_of(source), TEXTS))
    assert vectors.shape == (len(TEXTS), CLIPS.embed_dim)


def test_the_missing_tokenizer_repo_is_named_with_the_command_that_fetches_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = build_fake_hub(tmp_path / "hf", builders=(lambda: clips_repo("bert"),))
    activate(monkeypatch, hub.hf_home)
    with pytest.raises(WeightsUnavailableError) as info:
        load_encoder(CLIPS_SPEC, "cpu", "torch")
    message = str(info.value)
    command = download_command(BERT_REPO_ID, ["tokenizer.json"])
    assert message.startswith(f"{BERT_REPO_ID} (tokenizer.json), which {CLIPS_SPEC} needs,")
    assert f"`{command}`" in message and "\n" not in message
    # The second layout needs no second repo at all.
    other = build_fake_hub(tmp_path / "hf2", builders=(lambda: clips_repo("clips"),))
    activate(monkeypatch, other.hf_home)
    load_encoder(CLIPS_SPEC, "cpu", "torch").close()


@pytest.mark.slow
def test_the_printed_command_fixes_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = build_fake_hub(tmp_path / "hf", builders=(lambda: clips_repo("bert"),))
    activate(monkeypatch, hub.hf_home)
    with pytest.raises(WeightsUnavailableError) as info:
        load_encoder(CLIPS_SPEC, "cpu", "torch")
    command = str(info.value).split("`")[1].split()
    exe = Path(sys.executable).with_name(command[0])
    with LocalHub([bert_base_uncased_repo()]) as local:
        env = {**os.environ, **hub.env(), **local.env()}
        done = subprocess.run([str(exe), *command[1:]], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    encoder = load_encoder(CLIPS_SPEC, "cpu", "torch")
    np.testing.assert_array_equal(
        encoder._tokenizer(TEXTS).numpy(), reference_ids(vocab_of(hub), TEXTS)
    )


def test_the_first_online_run_fetches_the_tokenizer_repo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with LocalHub([clips_repo("bert"), bert_base_uncased_repo()]) as hub:
        go_online(monkeypatch, tmp_path / "hf", hub)
        encoder = load_encoder(CLIPS_SPEC, "cpu", "torch")
        encoder.close()
    fetched = {r.path for r in hub.requests if r.method == "GET"}
    assert f"/{BERT_REPO_ID}/resolve/main/tokenizer.json" in {
        p.replace(f"/resolve/{hub.commits[BERT_REPO_ID]}/", "/resolve/main/") for p in fetched
    }


def _load_transformers_model(repo_id: str) -> None:
    """Load a transformers repo through the product and use it once."""
    from searchengine.captions import load_answerer, load_captioner

    image = Image.new("RGB", (64, 48), (200, 30, 30))
    if repo_id == HF_CLIP_REPO_ID:
        encoder = load_encoder(f"hf:{repo_id}", "cpu")
        assert encoder.encode_texts(["a dog"]).shape == (1, HF_CLIP.projection_dim)
        assert encoder.encode_images([image]).shape == (1, HF_CLIP.projection_dim)
        encoder.close()
    elif repo_id == BLIP_CAPTION_REPO_ID:
        captioner = load_captioner(repo_id, "cpu")
        assert captioner.caption([image])[0]
        captioner.close()
    else:
        answerer = load_answerer(repo_id, "cpu")
        assert isinstance(answerer.answer(image, "what colour is it?"), str)
        answerer.close()


@pytest.mark.slow
@pytest.mark.parametrize("repo_id", [HF_CLIP_REPO_ID, BLIP_CAPTION_REPO_ID, BLIP_VQA_REPO_ID])
@pytest.mark.parametrize("state", ["online", "copied-without-links"])
def test_transformers_repos_load_offline_from_every_cache_state(
    fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, repo_id: str, state: str
) -> None:
    specs = [fake_hub.specs[repo_id]]
    if state == "online":
        hf_home = tmp_path / "hf_home"
        with LocalHub(specs) as hub, monkeypatch.context() as online:
            go_online(online, hf_home, hub)
            _load_transformers_model(repo_id)
        assert hub.requests
    else:
        hf_home = copy_hf_home(fake_hub.hf_home, tmp_path / "copy", keep_links=False)
    with LocalHub(specs) as hub:
        activate(monkeypatch, hf_home)
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        _load_transformers_model(repo_id)
    assert hub.requests == []


# ------------------------------------------------------------------ .bin-only repos


def test_bin_only_repos_load_their_pickled_weights(offline_hub: FakeHub) -> None:
    from transformers import BlipForConditionalGeneration, CLIPModel

    for repo_id, cls in (
        (HF_CLIP_REPO_ID, CLIPModel),
        (BLIP_CAPTION_REPO_ID, BlipForConditionalGeneration),
    ):
        cached = offline_hub.repos[repo_id]
        assert "pytorch_model.bin" in cached.files
        assert not any(f.endswith(".safetensors") for f in cached.files)
        model = cls.from_pretrained(repo_id)
        saved = torch.load(cached.snapshot / "pytorch_model.bin", weights_only=True)
        state = model.state_dict()
        for name, _ in model.named_parameters():
            torch.testing.assert_close(state[name], saved[name])


def test_the_declared_torch_floor_loads_bin_weights() -> None:
    # transformers refuses torch.load below torch 2.6 (CVE-2025-32434), and the openai
    # CLIP and BLIP captioning repos hold only pickled .bin weights on main.
    import tomllib
    from packaging.requirements import Requirement
    from packaging.version import Version

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    torch_req = next(Requirement(d) for d in deps if Requirement(d).name == "torch")
    assert not torch_req.specifier.contains(Version("2.5.1"))
    assert torch_req.specifier.contains(Version("2.6.0"))


# ----------------------------------------------- open_clip builtin, full size (ViT-B-32)


@pytest.mark.slow
def test_builtin_vit_b_32_openai_loads_offline(
    fake_hub_with_builtin: FakeHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    activate(monkeypatch, fake_hub_with_builtin.hf_home)
    cached = fake_hub_with_builtin.repos["timm/vit_base_patch32_clip_224.openai"]
    encoder = load_encoder("ViT-B-32:openai", "cpu", "torch")
    saved = load_file(str(cached.snapshot / "open_clip_model.safetensors"))
    state = encoder._model.state_dict()  # type: ignore[attr-defined]
    for name, value in saved.items():
        torch.testing.assert_close(state[name], value.to(state[name].dtype))
    # OpenAI's weights were trained with QuickGELU, which the plain config lacks.
    assert type(encoder._model.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"  # type: ignore[attr-defined]
    # Texts through open_clip's own BPE tokenizer: this is not CLIPS.
    texts = ["a red circle", "a dog"]
    tokens = open_clip.get_tokenizer("ViT-B-32")(texts)
    np.testing.assert_array_equal(encoder._tokenizer(texts).numpy(), tokens.numpy())  # type: ignore[attr-defined]
    with torch.no_grad():
        direct = encoder._model.encode_text(tokens, normalize=True).numpy()  # type: ignore[attr-defined]
    np.testing.assert_allclose(encoder.encode_texts(texts), direct, atol=1e-5)
    assert encoder.encode_images([Image.open(_image(tmp_path / "x.png"))]).shape == (1, 512)
