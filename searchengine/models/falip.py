"""FALIP: focus a CLIP ViT on a region without editing the image (Zhuang et al., ECCV 2024).

"Visual Prompt as Foveal Attention Boosts CLIP Zero-Shot Performance": instead of
drawing on the photo (a red circle, a blur, a crop), FALIP adds a *foveal attention
mask* to the attention logits of the class token in the ViT's multi-head
self-attention. The class token is the query whose output becomes the image embedding,
so raising its attention to the patches of a region of attention (ROA) makes the
embedding describe that region, while every patch still sees the whole photo (context
is kept, pixels are untouched).

The mask, as the paper and its authors' code define it: an additive ``(L, L)`` bias,
zero everywhere except in the class token's row, where the patches overlapping the ROA
get a Gaussian bump centred on the ROA, min-max normalised to ``[0, strength]``; the
authors' Gaussian is very wide (sigma of 100 patches), which makes the bump a shallow
dome: ``strength`` at the centre falling to 0 at the ROA's far corners. The authors
apply it in the later blocks only (the last 4 of ViT-B's 12); here, the last third of
the blocks (at least one). ``strength`` is the one free parameter; its default for the
shipped toy models was chosen on the tuning seed (``docs/explain.md``).

Plug-and-play for open_clip ``VisionTransformer`` towers with a class token (the shipped
toy models, ViT-B-32 and the other OpenAI/LAION ViTs): the mask enters through a forward
pre-hook on the chosen blocks, and both of open_clip's attention blocks take a
``(N * heads, L, L)`` float mask. Other towers (ModifiedResNet, timm, average-pooled
ViTs without a class token, transformers ``hf:`` models) are refused with one line that
names the baselines that work everywhere. It needs the torch tower: the default CPU
runtime runs open_clip towers as fixed ONNX graphs without an attention-mask input, so
a region encoding loads the torch tower of the same model (same weights, same space).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from PIL import Image

from searchengine.errors import ConfigError
from searchengine.models.base import l2_normalize
from searchengine.models.lite import Preprocess, resize_plan

__all__ = [
    "DEFAULT_STRENGTH",
    "FalipEncoder",
    "foveal_bias",
    "unsupported_reason",
]

# Peak of the foveal bump, in attention-logit units. Chosen on the tuning seed (5252)
# for the shipped toy models: toy's accuracy rises from 94.4 % at 8 to 97.2 % at 16 and
# stays there up to 128 (docs/explain.md). The FALIP authors' code uses 0.2 for
# ViT-B/16; CLIPs larger than the toy ones are not tuned here.
DEFAULT_STRENGTH = 16.0
# The authors' Gaussian width, in patches: wide enough that the bump is a gentle dome.
_SIGMA_PATCHES = 100.0

Box = tuple[float, float, float, float]


def unsupported_reason(model: Any) -> str | None:
    """Why FALIP cannot run on this open_clip model, or ``None`` when it can."""
    from open_clip.transformer import VisionTransformer

    visual = getattr(model, "visual", None)
    if not isinstance(visual, VisionTransformer):
        kind = type(visual).__name__ if visual is not None else "no"
        return f"its image tower is a {kind}, not a ViT"
    if getattr(visual, "attn_pool", None) is not None or visual.pool_type != "tok":
        return "its ViT pools without a class token"
    return None


def foveal_bias(
    box: Box, input_size: tuple[int, int], grid: tuple[int, int], strength: float
) -> np.ndarray:
    """The class token's extra attention logits over the patch grid, ``(rows * cols,)``.

    Args:
        box: ``(x0, y0, x1, y1)`` in the model's input pixels (after resize and crop).
        input_size: the input's ``(height, width)``.
        grid: the patch grid's ``(rows, cols)``.
        strength: the bump's peak value.
    """
    height, width = input_size
    rows, cols = grid
    ph, pw = height / rows, width / cols
    x0, y0, x1, y1 = box
    c0 = min(max(math.floor(x0 / pw), 0), cols - 1)
    r0 = min(max(math.floor(y0 / ph), 0), rows - 1)
    c1 = min(max(math.ceil(x1 / pw), c0 + 1), cols)
    r1 = min(max(math.ceil(y1 / ph), r0 + 1), rows)
    yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.float64)
    cy, cx = (r0 + r1 - 1) / 2, (c0 + c1 - 1) / 2
    bump = np.exp(-0.5 * ((yy - cy) ** 2 + (xx - cx) ** 2) / _SIGMA_PATCHES**2)
    eps = 1e-6  # a one-patch ROA gets the full strength
    bump = (bump - bump.min() + eps) / (bump.max() - bump.min() + eps) * strength
    bias = np.zeros((rows, cols), dtype=np.float32)
    bias[r0:r1, c0:c1] = bump
    return bias.reshape(-1)


class FalipEncoder:
    """Region-focused image embeddings from an open_clip ViT tower (torch).

    Args:
        encoder: an ``OpenClipEncoder`` (the torch runtime).
        strength: the foveal bump's peak (see :data:`DEFAULT_STRENGTH`).
        layers: how many of the last blocks get the mask (default: the last third).

    Raises:
        ConfigError: the tower is not a class-token ViT.
    """

    def __init__(self, encoder: Any, strength: float = DEFAULT_STRENGTH, layers: int | None = None):
        model = encoder.module
        reason = unsupported_reason(model)
        if reason is not None:
            raise ConfigError(
                f"--region-method falip needs an open_clip ViT image tower, and {encoder.spec} "
                f"cannot: {reason}; use --region-method crop, circle or blur"
            )
        self.encoder = encoder
        self.strength = strength
        self._visual = model.visual
        blocks = list(self._visual.transformer.resblocks)
        count = layers if layers is not None else max(1, math.ceil(len(blocks) / 3))
        self._blocks = blocks[len(blocks) - count :]
        self._cfg: Preprocess = encoder.preprocess_cfg

    def encode(self, images: Sequence[Image.Image], boxes: Sequence[Box]) -> np.ndarray:
        """One unit vector per (image, box), the box in that image's pixels."""
        import torch

        if len(images) != len(boxes):
            raise ValueError(f"{len(images)} images but {len(boxes)} boxes")
        if not images:
            return np.zeros((0, self.encoder.dim), dtype=np.float32)
        pixels = np.stack([self.encoder.preprocess(im) for im in images])
        height, width = pixels.shape[-2:]
        rows, cols = self._visual.grid_size
        tokens = rows * cols + 1
        masks = np.zeros((len(images), tokens, tokens), dtype=np.float32)
        for i, (image, box) in enumerate(zip(images, boxes, strict=True)):
            inside = self._to_input(box, image.size)
            masks[i, 0, 1:] = foveal_bias(inside, (height, width), (rows, cols), self.strength)
        batch = torch.from_numpy(pixels)
        with self._masked(torch.from_numpy(masks)):
            return l2_normalize(self.encoder.encode_tensor(batch))

    def _to_input(self, box: Box, size: tuple[int, int]) -> Box:
        """A box in image pixels into the model input's pixels (resize, then centre crop)."""
        width, height = size
        plan = resize_plan(width, height, self._cfg)
        sx, sy = plan.width / width, plan.height / height
        crop_h, crop_w = self._cfg.size
        left = 0 if plan.fill is None else round((plan.width - crop_w) / 2)
        top = 0 if plan.fill is None else round((plan.height - crop_h) / 2)
        x0, y0, x1, y1 = box
        return (x0 * sx - left, y0 * sy - top, x1 * sx - left, y1 * sy - top)

    @contextmanager
    def _masked(self, masks: Any) -> Iterator[None]:
        """Feed ``masks`` (one ``(L, L)`` bias per image) to the chosen blocks' attention."""
        device = next(self._visual.parameters()).device

        def hook(block: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            heads = block.attn.num_heads
            # Both open_clip attention blocks take (N * heads, L, L), batch-major.
            mask = masks.to(device).repeat_interleave(heads, dim=0)
            return args, {**kwargs, "attn_mask": mask}

        handles = [b.register_forward_pre_hook(hook, with_kwargs=True) for b in self._blocks]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
