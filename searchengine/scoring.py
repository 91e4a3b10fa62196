"""CLIPScore and RefCLIPScore (Hessel et al., 2021).

- CLIP-S(c, v) = w * max(cos(E_c, E_v), 0) with w = 2.5, the caption prefixed
  "A photo depicts ".
- RefCLIP-S(c, R, v) = harmonic mean of CLIP-S(c, v) and max(max_r cos(E_c, E_r), 0).

torchmetrics' ``CLIPScore`` differs: it reports ``100 * max(cos, 0)`` without the prefix.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CLIPSCORE_WEIGHT = 2.5
CLIPSCORE_PREFIX = "A photo depicts "


def with_prefix(caption: str) -> str:
    """The caption as CLIPScore encodes it."""
    return CLIPSCORE_PREFIX + caption


def clip_score(cosine: np.ndarray | float, weight: float = CLIPSCORE_WEIGHT) -> np.ndarray:
    """``weight * max(cos, 0)`` elementwise."""
    return np.asarray(weight * np.maximum(np.asarray(cosine, dtype=np.float64), 0.0))


def ref_clip_score(
    candidate: np.ndarray,
    image: np.ndarray,
    references: Sequence[np.ndarray] | np.ndarray,
    weight: float = CLIPSCORE_WEIGHT,
) -> float:
    """RefCLIPScore of one caption from unit vectors.

    Args:
        candidate: the caption's embedding (of the prefixed text), unit length.
        image: the image's embedding, unit length.
        references: embeddings of the reference captions, unit length, one per row.
        weight: CLIPScore's ``w``.

    Returns:
        The harmonic mean of CLIP-S and the best reference cosine (floored at 0);
        0 when either is 0.
    """
    clip_s = float(clip_score(float(np.dot(candidate, image)), weight))
    refs = np.atleast_2d(np.asarray(references, dtype=np.float64))
    ref_s = max(float(np.max(refs @ candidate)), 0.0) if refs.size else 0.0
    if clip_s <= 0.0 or ref_s <= 0.0:
        return 0.0
    return 2.0 * clip_s * ref_s / (clip_s + ref_s)
