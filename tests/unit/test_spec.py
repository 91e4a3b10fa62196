from pathlib import Path

import pytest

from searchengine.errors import UnknownModelError
from searchengine.models.spec import ModelKind, parse_model_spec, shipped_model_dir


def test_builtin_tag():
    spec = parse_model_spec("ViT-B-32:openai")
    assert spec.kind is ModelKind.OPEN_CLIP
    assert (spec.arch, spec.source, spec.open_clip_name) == ("ViT-B-32", "openai", "ViT-B-32")


def test_checkpoint_path_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = parse_model_spec("ViT-B-32:./weights/model.pt")
    assert spec.kind is ModelKind.OPEN_CLIP
    assert spec.source == str(tmp_path / "weights" / "model.pt")
    assert spec.spec == f"ViT-B-32:{tmp_path / 'weights' / 'model.pt'}"


def test_hf_hub_and_transformers():
    clips = parse_model_spec("hf-hub:UCSC-VLAA/ViT-L-14-CLIPS-Recap-DataComp-1B")
    assert clips.kind is ModelKind.OPEN_CLIP_HUB
    assert clips.open_clip_name == "hf-hub:UCSC-VLAA/ViT-L-14-CLIPS-Recap-DataComp-1B"
    hf = parse_model_spec("hf:openai/clip-vit-base-patch32")
    assert (hf.kind, hf.source) == (ModelKind.TRANSFORMERS, "openai/clip-vit-base-patch32")


def test_shipped_models_resolve_into_the_package():
    spec = parse_model_spec("toy")
    assert spec.kind is ModelKind.OPEN_CLIP_DIR
    assert Path(spec.source) == shipped_model_dir("toy")
    assert spec.open_clip_name == f"local-dir:{shipped_model_dir('toy')}"


@pytest.mark.parametrize("bad", ["", "   ", "ViT-B-32", "hf-hub:onlyname", "hf:a/b/c", ":openai"])
def test_bad_specs_list_the_valid_forms(bad):
    with pytest.raises(UnknownModelError) as info:
        parse_model_spec(bad)
    assert "hf-hub:ORG/NAME" in str(info.value)
    assert "ARCH:TAG" in str(info.value)
