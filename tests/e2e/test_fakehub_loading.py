"""The real model-loading code works offline against the fake hub cache.

Each repo in ``tests/fakehub.py`` is loaded through open_clip and transformers exactly as the
product loads it on a user's machine; weights must come from the cache (not a random init
that merely has the right shapes), and a repo missing from the cache must fail.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from fakehub import CLIPS, HF_CLIP, FakeHub, RepoSpec, activate, build_fake_hub, clips_repo
from huggingface_hub import hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import LocalEntryNotFoundError
from PIL import Image
from safetensors.torch import load_file
from transformers import CLIPModel, CLIPProcessor

CLIPS_SPEC = f"hf-hub:{CLIPS.repo_id}"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)


def _image(seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (50, 80, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _assert_weights_from(model: torch.nn.Module, weights_file: str | Path) -> None:
    """Every parameter of ``model`` holds the value stored in ``weights_file``."""
    saved = load_file(str(weights_file))
    state = model.state_dict()
    params = {name for name, _ in model.named_parameters()}
    assert params <= saved.keys()
    for name, value in saved.items():
        torch.testing.assert_close(state[name], value.to(state[name].dtype))


def _exception_chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


# ------------------------------------------------------------------ open_clip hf-hub (CLIPS)


def test_hub_client_resolves_the_fake_repos(offline_hub: FakeHub) -> None:
    for repo_id, cached in offline_hub.repos.items():
        for name in cached.files:
            assert Path(hf_hub_download(repo_id, name)) == cached.snapshot / name
            assert try_to_load_from_cache(repo_id, name) == str(cached.snapshot / name)


def test_clips_loads_offline_through_open_clip(offline_hub: FakeHub) -> None:
    model, _, preprocess = open_clip.create_model_and_transforms(CLIPS_SPEC)
    model.eval()
    tokenizer = open_clip.get_tokenizer(CLIPS_SPEC)

    snapshot = offline_hub.repos[CLIPS.repo_id].snapshot
    _assert_weights_from(model, snapshot / "open_clip_model.safetensors")

    pixels = preprocess(_image()).unsqueeze(0)
    assert pixels.shape == (1, 3, CLIPS.image_size, CLIPS.image_size)
    assert tuple(model.visual.preprocess_cfg["mean"]) == IMAGENET_MEAN

    texts = ["a red circle", "kids building a sandcastle on the beach"]
    tokens = tokenizer(texts)
    assert tokens.shape == (2, CLIPS.context_length) == (2, 80)
    with torch.no_grad():
        text = model.encode_text(tokens, normalize=True)
        image = model.encode_image(pixels, normalize=True)
    assert text.shape == (2, CLIPS.embed_dim)
    assert image.shape == (1, CLIPS.embed_dim)
    assert torch.isfinite(text).all() and torch.isfinite(image).all()
    assert not torch.allclose(text[0], text[1])  # the tokens reached the text tower


def test_clips_tokenizer_is_the_repos_own_in_clips_mode(offline_hub: FakeHub) -> None:
    tokenizer = open_clip.get_tokenizer(CLIPS_SPEC)
    hf = tokenizer.tokenizer  # the transformers tokenizer open_clip wraps
    assert tokenizer.context_length == 80
    assert hf.name_or_path == CLIPS.repo_id

    ids = tokenizer("A red circle!")[0].tolist()
    words = hf.convert_ids_to_tokens(ids[1:5])
    assert words == ["a", "red", "circle", "!"]  # lower-cased WordPiece from vocab.txt
    # clips mode: [bos] text [eos] padding, with the class token in the last slot
    assert ids[0] == hf.bos_token_id
    assert ids[5] == hf.eos_token_id
    assert set(ids[6:-1]) == {hf.pad_token_id}
    assert ids[-1] == hf.cls_token_id

    long_ids = tokenizer("circle " * 200)[0].tolist()
    assert len(long_ids) == 80
    assert long_ids[-1] == hf.cls_token_id


def test_clips_tokenizer_offline_needs_the_recorded_404_of_config_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The repo has no config.json. transformers 5's AutoTokenizer asks for one anyway; a
    # cache filled by an online load records the 404 under .no_exist/ and loads offline.
    # A cache without that record (e.g. filled by snapshot_download, which only writes
    # files that exist) cannot tell "absent" from "not downloaded", and offline it fails.
    def without_record() -> RepoSpec:
        full = clips_repo()
        return RepoSpec(full.repo_id, full.files)

    hub = build_fake_hub(tmp_path / "hf_home", builders=(without_record,))
    activate(monkeypatch, hub.hf_home)
    open_clip.create_model_and_transforms(CLIPS_SPEC, require_pretrained=True)  # model is fine
    with pytest.raises(OSError, match="couldn't connect"):
        open_clip.get_tokenizer(CLIPS_SPEC)


def test_clips_falls_back_to_pytorch_bin_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Older open_clip repos ship only open_clip_pytorch_model.bin (a torch.load pickle).
    hub = build_fake_hub(tmp_path / "hf_home", builders=(lambda: clips_repo(weights=("bin",)),))
    activate(monkeypatch, hub.hf_home)
    model, _, _ = open_clip.create_model_and_transforms(CLIPS_SPEC)
    saved = torch.load(
        hub.repos[CLIPS.repo_id].snapshot / "open_clip_pytorch_model.bin", weights_only=True
    )
    for name, value in model.state_dict().items():
        if name in saved:
            torch.testing.assert_close(value, saved[name])
    assert {n for n, _ in model.named_parameters()} <= saved.keys()


def test_open_clip_silently_randomises_when_only_weights_are_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The config is cached but no weight file: open_clip logs a warning and returns a
    # randomly initialised model. Only require_pretrained=True turns that into an error.
    def config_only() -> RepoSpec:
        full = clips_repo()
        return RepoSpec(
            full.repo_id, {"open_clip_config.json": full.files["open_clip_config.json"]}
        )

    hub = build_fake_hub(tmp_path / "hf_home", builders=(config_only,))
    activate(monkeypatch, hub.hf_home)
    model, _, _ = open_clip.create_model_and_transforms(CLIPS_SPEC)
    assert sum(p.numel() for p in model.parameters()) > 0
    with pytest.raises(RuntimeError, match="Required pretrained weights"):
        open_clip.create_model_and_transforms(CLIPS_SPEC, require_pretrained=True)


# ----------------------------------------------------------- transformers CLIPModel (hf:)


def test_transformers_clip_loads_offline(offline_hub: FakeHub) -> None:
    model = CLIPModel.from_pretrained(HF_CLIP.repo_id)
    model.eval()
    processor = CLIPProcessor.from_pretrained(HF_CLIP.repo_id)

    _assert_weights_from(model, offline_hub.repos[HF_CLIP.repo_id].snapshot / "model.safetensors")
    assert tuple(processor.image_processor.image_mean) == OPENAI_MEAN

    inputs = processor(
        text=["a red circle", "a photo of a dog"],
        images=[_image()],
        return_tensors="pt",
        padding="max_length",
    )
    assert inputs["input_ids"].shape == (2, HF_CLIP.max_length)
    assert inputs["pixel_values"].shape == (1, 3, HF_CLIP.image_size, HF_CLIP.image_size)
    bos, eos = processor.tokenizer.bos_token_id, processor.tokenizer.eos_token_id
    assert inputs["input_ids"][0, :5].tolist() == [
        bos,
        *processor.tokenizer.convert_tokens_to_ids(["a</w>", "red</w>", "circle</w>"]),
        eos,
    ]
    with torch.no_grad():
        out = model(**inputs)
    assert out.text_embeds.shape == (2, HF_CLIP.projection_dim)
    assert out.image_embeds.shape == (1, HF_CLIP.projection_dim)
    assert torch.isfinite(out.text_embeds).all() and torch.isfinite(out.image_embeds).all()
    assert not torch.allclose(out.text_embeds[0], out.text_embeds[1])


# ------------------------------------------------------------------ missing from the cache

_MISSING_CASES: dict[str, tuple[Callable[[], object], type[Exception], bool]] = {
    # name: (load, exception raised, whether a huggingface_hub error is in its chain)
    "open_clip builtin tag": (
        lambda: open_clip.create_model_and_transforms("ViT-B-32", pretrained="openai"),
        RuntimeError,
        True,
    ),
    "open_clip hf-hub": (
        lambda: open_clip.create_model_and_transforms("hf-hub:UCSC-VLAA/not-cached"),
        RuntimeError,
        True,
    ),
    "open_clip hf-hub tokenizer": (
        lambda: open_clip.get_tokenizer("hf-hub:UCSC-VLAA/not-cached"),
        OSError,
        True,
    ),
    "transformers model": (lambda: CLIPModel.from_pretrained("openai/not-cached"), OSError, True),
    # CLIPProcessor re-raises a fresh OSError: the hub error is not in the chain.
    "transformers processor": (
        lambda: CLIPProcessor.from_pretrained("openai/not-cached"),
        OSError,
        False,
    ),
}


@pytest.mark.parametrize("case", list(_MISSING_CASES))
def test_a_repo_missing_from_the_cache_fails_offline(offline_hub: FakeHub, case: str) -> None:
    load, raised, hub_error_in_chain = _MISSING_CASES[case]
    with pytest.raises(raised) as info:
        load()
    chain = _exception_chain(info.value)
    assert any(isinstance(e, LocalEntryNotFoundError) for e in chain) is hub_error_in_chain


# ------------------------------------------------------------------------------ subprocess

_CHILD = textwrap.dedent(
    """
    import json
    import open_clip, torch
    from huggingface_hub import constants
    from transformers import CLIPModel, CLIPProcessor

    model, _, _ = open_clip.create_model_and_transforms({clips!r}, require_pretrained=True)
    tokens = open_clip.get_tokenizer({clips!r})(["a red circle"])
    hf = CLIPModel.from_pretrained({hf!r})
    inputs = CLIPProcessor.from_pretrained({hf!r})(text=["a red circle"], return_tensors="pt")
    with torch.no_grad():
        clips_dim = model.encode_text(tokens).shape[-1]
        hf_dim = hf(**inputs, pixel_values=torch.zeros(1, 3, 224, 224)).text_embeds.shape[-1]
    print(json.dumps({{
        "hub_cache": constants.HF_HUB_CACHE,
        "offline": constants.is_offline_mode(),
        "context_length": tokens.shape[-1],
        "clips_dim": clips_dim,
        "hf_dim": hf_dim,
    }}))
    """
)


@pytest.mark.slow
def test_a_child_process_loads_through_the_environment(
    fake_hub: FakeHub, offline_hub_env: dict[str, str]
) -> None:
    script = _CHILD.format(clips=CLIPS_SPEC, hf=HF_CLIP.repo_id)
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=offline_hub_env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {
        "hub_cache": str(fake_hub.hub_cache),
        "offline": True,
        "context_length": 80,
        "clips_dim": CLIPS.embed_dim,
        "hf_dim": HF_CLIP.projection_dim,
    }


# --------------------------------------------------- open_clip builtin, full size (ViT-B-32)


@pytest.mark.slow
def test_builtin_vit_b_32_openai_loads_offline(
    fake_hub_with_builtin: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    activate(monkeypatch, fake_hub_with_builtin.hf_home)
    cached = fake_hub_with_builtin.repos["timm/vit_base_patch32_clip_224.openai"]

    # The openai weights were trained with QuickGELU; the plain ViT-B-32 config does not
    # use it, and open_clip warns. force_quick_gelu=True (or "ViT-B-32-quickgelu") is right.
    with pytest.warns(UserWarning, match="QuickGELU mismatch"):
        open_clip.create_model("ViT-B-32", pretrained="openai", load_weights=False)

    model, _, preprocess = open_clip.create_model_and_transforms(
        "ViT-B-32", pretrained="openai", force_quick_gelu=True, require_pretrained=True
    )
    model.eval()
    _assert_weights_from(model, cached.snapshot / "open_clip_model.safetensors")
    assert tuple(model.visual.preprocess_cfg["mean"]) == OPENAI_MEAN

    tokens = open_clip.get_tokenizer("ViT-B-32")(["a red circle", "a dog"])
    with torch.no_grad():
        text = model.encode_text(tokens)
        image = model.encode_image(preprocess(_image()).unsqueeze(0))
    assert text.shape == (2, 512) and image.shape == (1, 512)
    assert torch.isfinite(text).all() and torch.isfinite(image).all()
