"""Model spec strings, parsed in one place.

Accepted forms (see ``parse_model_spec``):

- ``ARCH:TAG``            open_clip builtin architecture + pretrained tag (``ViT-B-32:openai``)
- ``ARCH:/path/ckpt.pt``  open_clip architecture with a state dict on disk
- ``hf-hub:ORG/NAME``     open_clip model from the Hugging Face hub (e.g. CLIPS)
- ``hf:ORG/NAME``         transformers ``CLIPModel`` from the Hugging Face hub (or a local dir)
- ``local-dir:/path``     open_clip model folder in hub format (config + weights)
- ``toy`` / ``toy-large`` the tiny models shipped with the package
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum
from importlib import resources
from pathlib import Path

from searchengine.errors import UnknownModelError

DEFAULT_MODEL = "ViT-B-32:openai"
SHIPPED_MODELS = ("toy", "toy-large")

FORMS_HELP = (
    "ARCH:TAG (e.g. ViT-B-32:openai), ARCH:/path/to/checkpoint.pt, hf-hub:ORG/NAME, "
    "hf:ORG/NAME, local-dir:/path, " + ", ".join(SHIPPED_MODELS)
)


class ModelKind(str, Enum):
    OPEN_CLIP = "open_clip"  # builtin arch + pretrained tag or checkpoint file
    OPEN_CLIP_HUB = "open_clip_hub"  # hf-hub:ORG/NAME
    OPEN_CLIP_DIR = "open_clip_dir"  # local-dir:/path and the shipped toy models
    TRANSFORMERS = "transformers"  # hf:ORG/NAME


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec.

    Attributes:
        spec: the canonical string, as recorded in a collection.
        kind: which loader handles it.
        arch: open_clip architecture name (builtin kinds only).
        source: pretrained tag, checkpoint path, hub repo id or directory.
    """

    spec: str
    kind: ModelKind
    arch: str | None
    source: str

    @property
    def open_clip_name(self) -> str:
        """The model name to hand to ``open_clip.create_model_and_transforms``."""
        if self.kind is ModelKind.OPEN_CLIP_HUB:
            return f"hf-hub:{self.source}"
        if self.kind is ModelKind.OPEN_CLIP_DIR:
            return f"local-dir:{self.source}"
        assert self.arch is not None
        return self.arch


def shipped_model_dir(name: str) -> Path:
    """Directory of a model shipped inside the package (hub-format config + weights)."""
    return Path(str(resources.files("searchengine") / "toy" / "assets" / name))


def parse_model_spec(spec: str) -> ModelSpec:
    """Parse a model spec string.

    Args:
        spec: one of the forms listed in this module's docstring.

    Returns:
        The parsed spec. Nothing is loaded or downloaded.

    Raises:
        UnknownModelError: the string matches none of the forms; the message lists them.
    """
    text = spec.strip()
    if not text:
        raise UnknownModelError(f"empty model spec; use one of: {FORMS_HELP}")
    if text in SHIPPED_MODELS:
        return ModelSpec(text, ModelKind.OPEN_CLIP_DIR, None, str(shipped_model_dir(text)))
    if text.startswith("hf-hub:"):
        repo = text[len("hf-hub:") :]
        _check_repo_id(repo, text)
        return ModelSpec(text, ModelKind.OPEN_CLIP_HUB, None, repo)
    if text.startswith("hf:"):
        repo = text[len("hf:") :]
        if not Path(repo).is_dir():
            _check_repo_id(repo, text)
        return ModelSpec(text, ModelKind.TRANSFORMERS, None, repo)
    if text.startswith("local-dir:"):
        folder = os.path.abspath(os.path.expanduser(text[len("local-dir:") :]))
        return ModelSpec(f"local-dir:{folder}", ModelKind.OPEN_CLIP_DIR, None, folder)
    arch, sep, source = text.partition(":")
    if not sep or not arch or not source:
        raise UnknownModelError(f"cannot parse model spec {spec!r}; use one of: {FORMS_HELP}")
    if _looks_like_path(source):
        source = os.path.abspath(os.path.expanduser(source))
        return ModelSpec(f"{arch}:{source}", ModelKind.OPEN_CLIP, arch, source)
    return ModelSpec(text, ModelKind.OPEN_CLIP, arch, source)


def parse_transformers_model(name: str, what: str, suggestions: str) -> ModelSpec:
    """A transformers model name (BLIP, CLIPSeg) as a spec: an existing local folder
    (made absolute) or a hub repo id ``ORG/NAME``; an ``hf:`` prefix is allowed.

    Raises:
        UnknownModelError: the name is neither; the message names ``what`` was asked
            for and ``suggestions``.
    """
    text = name.strip()
    text = text[len("hf:") :] if text.startswith("hf:") else text
    folder = os.path.expanduser(text)
    if text and os.path.isdir(folder):
        path = os.path.abspath(folder)
        return ModelSpec(path, ModelKind.TRANSFORMERS, None, path)
    parts = text.split("/")
    if len(parts) != 2 or not all(parts) or text.startswith((".", "~")):
        raise UnknownModelError(
            f"{what} model {name!r} is neither a local folder nor a hub repo id ORG/NAME; "
            f"use {suggestions}"
        )
    return ModelSpec(text, ModelKind.TRANSFORMERS, None, text)


def _looks_like_path(source: str) -> bool:
    return (
        source.startswith(("/", "./", "../", "~"))
        or source.endswith((".pt", ".pth", ".bin", ".safetensors"))
        or os.sep in source
    )


def _check_repo_id(repo: str, spec: str) -> None:
    parts = repo.split("/")
    if len(parts) != 2 or not all(parts):
        raise UnknownModelError(
            f"model spec {spec!r} needs a hub repo id of the form ORG/NAME; "
            f"use one of: {FORMS_HELP}"
        )
