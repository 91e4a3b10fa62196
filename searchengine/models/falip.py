"""FALIP: focus a CLIP ViT on a region without editing the image (Zhuang et al., ECCV 2024).

"Visual Prompt as Foveal Attention Boosts CLIP Zero-Shot Performance": instead of
drawing on the photo (a red circle, a blur, a crop), FALIP adds a *foveal attention
mask* to the attention logits of the class token in the ViT's multi-head
self-attention. The class token is the query whose output becomes the image embedding,
so raising its attention to the patches of a region of attention (ROA) makes the
embedding describe that region, while every patch still sees the whole photo (context
is kept, pixels are untouched).

The mask here: an additive ``(L, L)`` bias, zero everywhere except in the class
token's row, where each patch gets ``log(1 + (e**strength - 1) * c)``, ``c`` being the
fraction of the patch the ROA covers (0 outside it). In the class token's softmax this
multiplies a patch's weight by ``1 + (e**strength - 1) * c``: a patch wholly inside the
ROA counts ``e**strength`` times, a patch half inside about half that, a patch outside
as before. Strength 0 is exactly the plain embedding. It is applied in the later blocks:
the last third, and at least four (the authors' 4 of ViT-B's 12; every block of the
shallow toy ViTs). How this differs
from the authors' mask (a dome over every patch the box touches, strength 0.2) and why
is in ``docs/explain.md``; ``strength``'s default was chosen on the tuning seed for the
shipped toy models.

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
    "masked_blocks",
    "patch_coverage",
    "unsupported_reason",
]

# The bias of a patch wholly inside the region, in attention-logit units. Chosen on the
# tuning seed (5252) for the shipped toy models: grounding accuracy stops rising at 16
# for toy and at 64 for toy-large, where the class token of the masked blocks attends
# to the region alone (docs/explain.md). The FALIP authors use 0.2 for ViT-B/16 with
# their dome; larger CLIPs are not tuned here.
DEFAULT_STRENGTH = 64.0

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


def patch_coverage(box: Box, input_size: tuple[int, int], grid: tuple[int, int]) -> np.ndarray:
    """The fraction of each patch that ``box`` covers, ``(rows, cols)`` in ``[0, 1]``.

    Args:
        box: ``(x0, y0, x1, y1)`` in the model's input pixels (after resize and crop).
        input_size: the input's ``(height, width)``.
        grid: the patch grid's ``(rows, cols)``.
    """
    height, width = input_size
    rows, cols = grid
    x0, y0, x1, y1 = box

    def along(lo: float, hi: float, n: int, step: float) -> np.ndarray:
        starts = np.arange(n) * step
        return np.clip(np.minimum(hi, starts + step) - np.maximum(lo, starts), 0, None) / step

    return np.outer(along(y0, y1, rows, height / rows), along(x0, x1, cols, width / cols))


def foveal_bias(
    box: Box, input_size: tuple[int, int], grid: tuple[int, int], strength: float
) -> np.ndarray:
    """The class token's extra attention logits over the patch grid, ``(rows * cols,)``.

    ``log(1 + (e**strength - 1) * c)`` per patch, ``c`` its :func:`patch_coverage`: the
    patches the box covers wholly get ``strength``, partly covered ones less, the rest 0.

    Args:
        box: ``(x0, y0, x1, y1)`` in the model's input pixels (after resize and crop).
        input_size: the input's ``(height, width)``.
        grid: the patch grid's ``(rows, cols)``.
        strength: the bias of a wholly covered patch (``>= 0``; 0 adds nothing).
    """
    cover = patch_coverage(box, input_size, grid).reshape(-1)
    if strength == 0:
        return np.zeros(cover.shape, dtype=np.float32)
    # log(c * e**s + (1 - c)), written so that a large strength cannot overflow.
    with np.errstate(divide="ignore"):
        bias = np.logaddexp(strength + np.log(cover), np.log1p(-cover))
    return bias.astype(np.float32)


def masked_blocks(depth: int) -> int:
    """How many of a ViT's last blocks get the mask: a third, and at least four.

    Four is the authors' count for ViT-B's 12 blocks (9 to 12). Shallower towers get
    every block: on the tuning seed, a region of the 3- and 4-block toy ViTs masked in
    every block ranks photos of that object above photos of the other one far more
    often than masked in two (docs/explain.md), and grounds as well.
    """
    return min(depth, max(4, math.ceil(depth / 3)))


class FalipEncoder:
    """Region-focused image embeddings from an open_clip ViT tower (torch).

    Args:
        encoder: an ``OpenClipEncoder`` (the torch runtime).
        strength: a wholly covered patch's bias (see :data:`DEFAULT_STRENGTH`), ``>= 0``.
        layers: how many of the last blocks get the mask (default: :func:`masked_blocks`).

    Raises:
        ConfigError: the tower is not a class-token ViT.
        ValueError: a negative strength.
    """

    def __init__(self, encoder: Any, strength: float = DEFAULT_STRENGTH, layers: int | None = None):
        if not strength >= 0:
            raise ValueError(f"FALIP strength must be >= 0, not {strength}")
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
        count = layers if layers is not None else masked_blocks(len(blocks))
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
