"""Offline errors name the repo, the file and the command that fetches them (no torch)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakehub import RepoSpec, activate, write_cached_repo

from searchengine.errors import WeightsUnavailableError
from searchengine.models.loading import (
    download_command,
    first_missing,
    hub_file,
    missing_message,
)
from searchengine.models.spec import parse_model_spec

CLIPS = "UCSC-VLAA/ViT-L-14-CLIPS-Recap-DataComp-1B"


@pytest.mark.parametrize(
    ("version", "tool"), [("0.33.4", "huggingface-cli download"), ("0.34.0", "hf download")]
)
def test_the_command_is_the_installed_clients(
    monkeypatch: pytest.MonkeyPatch, version: str, tool: str
) -> None:
    from importlib import metadata

    monkeypatch.setattr(metadata, "version", lambda name: version)
    assert download_command("bert-base-uncased", ["tokenizer.json"]) == (
        f"{tool} bert-base-uncased tokenizer.json"
    )


def test_the_line_names_what_is_missing_and_for_whom(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    activate(monkeypatch, tmp_path)
    line = missing_message("bert-base-uncased", ["tokenizer.json"], f"hf-hub:{CLIPS}", False)
    assert line.startswith(f"bert-base-uncased (tokenizer.json), which hf-hub:{CLIPS} needs, ")
    assert "offline mode (HF_HUB_OFFLINE=1)" in line
    assert line.endswith(
        f"`{download_command('bert-base-uncased', ['tokenizer.json'])}` "
        "(or run once with internet access)"
    )
    weights = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    own = missing_message(CLIPS, weights, f"hf-hub:{CLIPS}", True)
    assert own.startswith(
        f"{CLIPS} (open_clip_model.safetensors or open_clip_pytorch_model.bin) is"
    )
    assert f"`{download_command(CLIPS)}`" in own


def test_first_missing_walks_the_files_a_load_reads(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    activate(monkeypatch, tmp_path)
    spec = parse_model_spec(f"hf-hub:{CLIPS}")
    assert first_missing(spec) == (CLIPS, ("open_clip_config.json",))
    write_cached_repo(tmp_path / "hub", RepoSpec(CLIPS, {"open_clip_config.json": b"{}"}))
    assert first_missing(spec) == (
        CLIPS,
        ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"),
    )
    files = {"open_clip_config.json": b"{}", "open_clip_pytorch_model.bin": b"x"}
    write_cached_repo(tmp_path / "hub", RepoSpec(CLIPS, files))
    assert first_missing(spec) is None
    assert first_missing(parse_model_spec("local-dir:/somewhere")) is None


def test_hub_file_takes_the_first_cached_alternative_offline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    activate(monkeypatch, tmp_path)
    cached = write_cached_repo(
        tmp_path / "hub", RepoSpec("bert-base-uncased", {"vocab.txt": b"[PAD]\n"})
    )
    path = hub_file("bert-base-uncased", ["tokenizer.json", "vocab.txt"], "x")
    assert path == cached.snapshot / "vocab.txt"
    with pytest.raises(WeightsUnavailableError, match=r"^other \(tokenizer\.json\), which x needs"):
        hub_file("other", ["tokenizer.json", "vocab.txt"], "x")
