"""open_clip encoders: builtin tags, checkpoints on disk, hf-hub repos, local dirs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from searchengine.errors import UnknownModelError
from searchengine.models.base import l2_normalize
from searchengine.models.loading import autocast, hub_errors_to_weights_error, resolve_device
from searchengine.models.spec import ModelKind, ModelSpec


class OpenClipEncoder:
    """An open_clip model behind the ``Encoder`` protocol."""

    def __init__(self, spec: ModelSpec, device: str = "auto") -> None:
        import open_clip
        import torch

        self.spec = spec.spec
        self.device = resolve_device(device)
        pretrained = spec.source if spec.kind is ModelKind.OPEN_CLIP else None
        name = spec.open_clip_name
        if spec.kind is ModelKind.OPEN_CLIP and name not in open_clip.list_models():
            raise UnknownModelError(
                f"open_clip has no architecture {name!r} (model spec {spec.spec!r}); "
                "run `python -c 'import open_clip; print(open_clip.list_models())'` for the list"
            )
        with hub_errors_to_weights_error(spec):
            model, _, transform = open_clip.create_model_and_transforms(
                name, pretrained=pretrained, device=self.device
            )
            self._tokenizer = open_clip.get_tokenizer(name)
        model.eval()
        self._model: Any = model
        self._transform = transform
        self._torch = torch
        self.dim = int(model.text_projection.shape[-1]) if _has_proj(model) else _probe_dim(model)
        self.image_size = _image_size(model)
        self.logit_scale = float(model.logit_scale.exp().item())

    def preprocess(self, image: Image.Image) -> np.ndarray:
        tensor = self._transform(image.convert("RGB"))
        return np.asarray(tensor.numpy(), dtype=np.float32)

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        torch = self._torch
        batch = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))
        with torch.inference_mode(), autocast(self.device):
            features = self._model.encode_image(batch.to(self.device, non_blocking=True))
        return l2_normalize(features.float().cpu().numpy())

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.encode_pixels(np.stack([self.preprocess(im) for im in images]))

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
