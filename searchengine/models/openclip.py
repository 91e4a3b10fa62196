"""open_clip encoders: builtin tags, checkpoints on disk, hf-hub repos, local dirs."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from searchengine.errors import ModelError, UnknownModelError
from searchengine.models.base import encode_pil, l2_normalize
from searchengine.models.clips import TOKENIZER_FILES, ClipsTokenizer, text_layout
from searchengine.models.lite import Preprocess
from searchengine.models.loading import (
    autocast,
    hub_errors_to_weights_error,
    hub_file,
    read_json,
    resolve_device,
)
from searchengine.models.portable import PortablePreprocessor, TorchTransform
from searchengine.models.spec import ModelKind, ModelSpec


class OpenClipEncoder:
    """An open_clip model behind the ``Encoder`` protocol."""

    def __init__(self, spec: ModelSpec, device: str = "auto") -> None:
        import open_clip
        import torch

        self.spec = spec.spec
        self.device = resolve_device(device)
        name = spec.open_clip_name
        pretrained, quick_gelu = _check_source(spec)
        with hub_errors_to_weights_error(spec):
            model, _, transform = open_clip.create_model_and_transforms(
                name,
                pretrained=pretrained,
                device=self.device,
                force_quick_gelu=quick_gelu,
                # Without this, a cached config with missing weights silently
                # yields a randomly initialised model.
                require_pretrained=True,
            )
            self.model_cfg = model_config(spec)
            self._tokenizer = text_tokenizer(spec, self.model_cfg)
        model.eval()
        self._model: Any = model
        self._pixels = TorchTransform(transform)
        self._torch = torch
        self.dim = int(model.text_projection.shape[-1]) if _has_proj(model) else _probe_dim(model)
        self.image_size = _image_size(model)
        self.logit_scale = float(model.logit_scale.exp().item())
        # The transform's settings, for ingest that preprocesses on the device itself.
        self.preprocess_cfg = Preprocess.from_dict(open_clip.get_model_preprocess_cfg(model))

    @property
    def module(self) -> Any:
        """The open_clip model itself, for encodings that hook into its towers (FALIP)."""
        if self._model is None:
            raise ModelError(f"{self.spec} was closed; load it again")
        return self._model

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return self._pixels(image)

    def portable_preprocessor(self) -> PortablePreprocessor:
        """This model's ``preprocess`` without the model (for cluster ingest)."""
        return PortablePreprocessor(self.image_size, self._pixels)

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        batch = self._torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))
        if self.device == "cuda":
            batch = batch.pin_memory()  # lets the host-to-GPU copy run asynchronously
        return self.encode_tensor(batch)

    def encode_tensor(self, batch: Any) -> np.ndarray:
        """Embed a preprocessed float NCHW tensor, on whatever device it is."""
        torch = self._torch
        with torch.inference_mode(), autocast(self.device):
            features = self._model.encode_image(batch.to(self.device, non_blocking=True))
        return l2_normalize(features.float().cpu().numpy())

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return encode_pil(self, images)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        torch = self._torch
        tokens = self._tokenizer(list(texts))
        with torch.inference_mode(), autocast(self.device):
            features = self._model.encode_text(tokens.to(self.device))
        return l2_normalize(features.float().cpu().numpy())

    def close(self) -> None:
        self._model = None
        if self.device == "cuda":
            self._torch.cuda.empty_cache()


def _check_source(spec: ModelSpec) -> tuple[str | None, bool]:
    """Validate a spec against open_clip before any download is tried.

    Returns the ``pretrained`` argument and whether the weights need QuickGELU:
    OpenAI's weights were trained with it while the plain ``ViT-B-32`` config uses
    GELU, and open_clip only warns about the mismatch, so it is forced here.
    """
    import open_clip

    if spec.kind is ModelKind.OPEN_CLIP_DIR:
        if not (Path(spec.source) / "open_clip_config.json").is_file():
            raise UnknownModelError(
                f"{spec.source} is not an open_clip model folder (no open_clip_config.json)"
            )
        return None, False
    if spec.kind is not ModelKind.OPEN_CLIP:
        return None, False
    arch = spec.arch or ""
    if arch not in open_clip.list_models():
        raise UnknownModelError(
            f"open_clip has no architecture {arch!r} (model spec {spec.spec!r}); list them with "
            "python -c 'import open_clip; print(open_clip.list_models())'"
        )
    if os.path.isabs(spec.source):
        if not os.path.isfile(spec.source):
            raise UnknownModelError(f"checkpoint file not found: {spec.source}")
        return spec.source, "quickgelu" in arch
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if spec.source not in tags:
        raise UnknownModelError(
            f"open_clip has no pretrained tag {spec.source!r} for {arch}; "
            f"choose one of: {', '.join(tags) or '(none)'}"
        )
    cfg = open_clip.get_pretrained_cfg(arch, spec.source)
    return spec.source, bool(cfg.get("quick_gelu", False))


def model_config(spec: ModelSpec) -> dict[str, Any]:
    """The ``model_cfg`` open_clip built the model from (already cached by the load)."""
    import open_clip

    if spec.kind is ModelKind.OPEN_CLIP_DIR:
        config = read_json(Path(spec.source) / "open_clip_config.json")
    elif spec.kind is ModelKind.OPEN_CLIP_HUB:
        from huggingface_hub import try_to_load_from_cache

        # open_clip has just fetched it: no second round trip to the hub.
        cached = try_to_load_from_cache(spec.source, "open_clip_config.json")
        path = Path(cached) if isinstance(cached, str) else None
        path = path or hub_file(spec.source, ("open_clip_config.json",), spec.spec)
        config = read_json(path)
    else:
        config = open_clip.get_model_config(spec.arch or "") or {}
    cfg = config.get("model_cfg", config)
    return cfg if isinstance(cfg, dict) else {}


def text_tokenizer(spec: ModelSpec, model_cfg: dict[str, Any]) -> Any:
    """The tokenizer the model's texts must go through: CLIPS' own layout, or open_clip's.

    Raises:
        UnknownModelError: the config asks for a tokenizer mode that cannot be reproduced.
        ModelError: a CLIPS model whose tokenizer is not bert-base-uncased's vocabulary.
        WeightsUnavailableError: the tokenizer's files are not cached and cannot be fetched.
    """
    import open_clip

    name = spec.arch if spec.kind is ModelKind.OPEN_CLIP else spec.source
    if text_layout(model_cfg, name or spec.spec) != "clips":
        return open_clip.get_tokenizer(spec.open_clip_name)
    text = model_cfg.get("text_cfg") or {}
    kwargs = text.get("tokenizer_kwargs") or {}
    clips = ClipsTokenizer(
        clips_tokenizer_file(spec, text),
        int(text.get("context_length") or 80),
        str(kwargs.get("clean") or "whitespace"),
        int(text["vocab_size"]) if text.get("vocab_size") else None,
    )
    return TorchIds(clips)


def clips_tokenizer_file(spec: ModelSpec, text_cfg: dict[str, Any]) -> Path:
    """Where a CLIPS model's WordPiece tokenizer is read from.

    As open_clip does: a model folder's own tokenizer files first, else the repo (or folder)
    the config's ``hf_tokenizer_name`` names, e.g. ``bert-base-uncased``.
    """
    if spec.kind is ModelKind.OPEN_CLIP_DIR:
        for name in TOKENIZER_FILES:
            if (Path(spec.source) / name).is_file():
                return Path(spec.source) / name
    source = str(text_cfg.get("hf_tokenizer_name") or "")
    if os.path.isdir(source):
        for name in TOKENIZER_FILES:
            if (Path(source) / name).is_file():
                return Path(source) / name
    if not source or os.path.isdir(source):
        raise UnknownModelError(
            f"{spec.spec} is a CLIPS model but neither its folder nor hf_tokenizer_name "
            f"({source or 'unset'}) holds a tokenizer ({' or '.join(TOKENIZER_FILES)})"
        )
    return hub_file(source, TOKENIZER_FILES, spec.spec)


class TorchIds:
    """A torch-free tokenizer behind open_clip's tokenizer interface (texts -> LongTensor)."""

    def __init__(self, clips: ClipsTokenizer) -> None:
        self.clips = clips
        self.context_length = clips.context_length

    def __call__(self, texts: Sequence[str] | str) -> Any:
        import torch

        return torch.from_numpy(self.clips([texts] if isinstance(texts, str) else list(texts)))


def _has_proj(model: Any) -> bool:
    proj = getattr(model, "text_projection", None)
    return proj is not None and hasattr(proj, "shape")


def _probe_dim(model: Any) -> int:
    # Towers built from HF text models or timm keep the projection inside a module;
    # one dummy forward is the only reliable way to learn the output width.
    import torch

    size = _image_size(model)
    device = next(model.parameters()).device
    with torch.inference_mode():
        out = model.encode_image(torch.zeros(1, 3, size, size, device=device))
    return int(out.shape[-1])


def _image_size(model: Any) -> int:
    size = getattr(model.visual, "image_size", 224)
    if isinstance(size, (tuple, list)):
        return int(size[0])
    return int(size)
