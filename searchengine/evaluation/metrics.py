"""Recall@K and MRR for text-to-image and image-to-text retrieval.

Recall@K follows CLIP_benchmark (``clip_benchmark/metrics/zeroshot_retrieval.py``) to the
bit, so numbers can be compared with published tables:

- scores are ``texts @ images.T`` computed by torch in float32, one row per caption;
- text->image: one query per caption; a hit when its image is among the top K images;
- image->text: one query per image; a hit when *any* of its captions is among the top K;
- the top K is ``torch.topk(scores, K)``. With tied scores, *which* tied candidates
  ``topk`` keeps is torch's choice (it is not "lowest index first" and can differ between
  K values); we call the same function on the same scores, so ties fall the same way.
- K larger than the candidate pool (where CLIP_benchmark would fail) is clamped to the
  pool size, where every query is a hit.

MRR (mean reciprocal rank) is not in CLIP_benchmark. Here the rank of a query is the
position of its first relevant item, counting ties against the model: ``rank = 1 +
number of non-relevant candidates scoring at least as high as the best relevant one``.
Without ties this is the usual position in the sorted list; a model that gives every
candidate the same score gets rank N, not 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = [
    "RetrievalMetrics",
    "image_to_text_hits",
    "image_to_text_ranks",
    "recall_at_k",
    "retrieval_metrics",
    "similarity",
    "text_to_image_hits",
    "text_to_image_ranks",
]

DEFAULT_KS = (1, 5, 10)
_ROWS = 256  # query rows per chunk: bounds memory at 256 x candidates


@dataclass(frozen=True)
class RetrievalMetrics:
    """Recall@K both ways and MRR both ways, as fractions in [0, 1].

    Attributes:
        text_to_image: R@K per K, one query per caption (CLIP_benchmark
            ``image_retrieval_recall@K``).
        image_to_text: R@K per K, one query per image (CLIP_benchmark
            ``text_retrieval_recall@K``).
        text_to_image_mrr: mean reciprocal rank of each caption's image.
        image_to_text_mrr: mean reciprocal rank of each image's best-ranked caption.
        images: number of images.
        captions: number of captions.
    """

    text_to_image: dict[int, float]
    image_to_text: dict[int, float]
    text_to_image_mrr: float
    image_to_text_mrr: float
    images: int
    captions: int

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON-ready form: ``t2i_R@1``, ..., ``t2i_MRR``, ``i2t_R@1``, ..."""
        out: dict[str, Any] = {}
        for k, value in self.text_to_image.items():
            out[f"t2i_R@{k}"] = value
        out["t2i_MRR"] = self.text_to_image_mrr
        for k, value in self.image_to_text.items():
            out[f"i2t_R@{k}"] = value
        out["i2t_MRR"] = self.image_to_text_mrr
        out["images"] = self.images
        out["captions"] = self.captions
        return out


def similarity(text_embeddings: np.ndarray, image_embeddings: np.ndarray) -> np.ndarray:
    """``texts @ images.T`` in float32, computed by torch exactly as CLIP_benchmark does.

    The matrix product is left to torch (not numpy) on purpose: a different BLAS can round
    the last bit differently, and near-ties would then fall differently.

    Returns:
        (captions, images) scores.
    """
    import torch

    texts = torch.from_numpy(np.ascontiguousarray(text_embeddings, dtype=np.float32))
    images = torch.from_numpy(np.ascontiguousarray(image_embeddings, dtype=np.float32))
    return (texts @ images.t()).numpy()


def text_to_image_hits(scores: np.ndarray, caption_image: Sequence[int], k: int) -> np.ndarray:
    """Per caption: is its image among the ``k`` best-scoring images?

    Args:
        scores: (captions, images) similarity.
        caption_image: the image index of each caption.
        k: cut-off; clamped to the number of images.

    Returns:
        A boolean array, one entry per caption.
    """
    import torch

    table = _tensor(scores)
    owners = torch.as_tensor(np.asarray(caption_image, dtype=np.int64))
    k = _clamp(k, table.shape[1])
    hits = []
    for start in range(0, table.shape[0], _ROWS):
        top = torch.topk(table[start : start + _ROWS], k, dim=1).indices
        hits.append((top == owners[start : start + _ROWS, None]).any(dim=1))
    return torch.cat(hits).numpy() if hits else np.zeros(0, dtype=bool)


def image_to_text_hits(scores: np.ndarray, caption_image: Sequence[int], k: int) -> np.ndarray:
    """Per image: is any of its captions among the ``k`` best-scoring captions?

    Args:
        scores: (captions, images) similarity (the same matrix as for text->image).
        caption_image: the image index of each caption.
        k: cut-off; clamped to the number of captions.

    Returns:
        A boolean array, one entry per image.
    """
    import torch

    table = _tensor(scores).t()
    owners = torch.as_tensor(np.asarray(caption_image, dtype=np.int64))
    k = _clamp(k, table.shape[1])
    hits = []
    for start in range(0, table.shape[0], _ROWS):
        top = torch.topk(table[start : start + _ROWS], k, dim=1).indices
        mine = torch.arange(start, min(start + _ROWS, table.shape[0]))
        hits.append((owners[top] == mine[:, None]).any(dim=1))
    return torch.cat(hits).numpy() if hits else np.zeros(0, dtype=bool)


def recall_at_k(
    scores: np.ndarray, caption_image: Sequence[int], ks: Sequence[int] = DEFAULT_KS
) -> tuple[dict[int, float], dict[int, float]]:
    """Text->image and image->text recall at each K (CLIP_benchmark definitions).

    Returns:
        ``(text_to_image, image_to_text)``: fraction of hits per K.
    """
    _check(scores, caption_image)
    t2i = {k: float(text_to_image_hits(scores, caption_image, k).mean()) for k in ks}
    i2t = {k: float(image_to_text_hits(scores, caption_image, k).mean()) for k in ks}
    return t2i, i2t


def text_to_image_ranks(scores: np.ndarray, caption_image: Sequence[int]) -> np.ndarray:
    """Per caption, the 1-based rank of its image (ties count against the model)."""
    scores = np.asarray(scores)
    owners = np.asarray(caption_image, dtype=np.int64)
    ranks = np.empty(len(owners), dtype=np.int64)
    for start in range(0, len(owners), _ROWS):
        block = scores[start : start + _ROWS]
        rows = np.arange(len(block))
        own = block[rows, owners[start : start + _ROWS]]
        # Every candidate at least as good, the image itself included once.
        ranks[start : start + _ROWS] = (block >= own[:, None]).sum(axis=1)
    return ranks


def image_to_text_ranks(scores: np.ndarray, caption_image: Sequence[int]) -> np.ndarray:
    """Per image, the 1-based rank of its best caption (ties count against the model)."""
    table = np.asarray(scores).T
    owners = np.asarray(caption_image, dtype=np.int64)
    ranks = np.empty(table.shape[0], dtype=np.int64)
    for start in range(0, table.shape[0], _ROWS):
        block = table[start : start + _ROWS]
        mine = owners[None, :] == np.arange(start, start + len(block))[:, None]
        best = np.where(mine, block, -np.inf).max(axis=1)
        ranks[start : start + _ROWS] = 1 + ((block >= best[:, None]) & ~mine).sum(axis=1)
    return ranks


def retrieval_metrics(
    text_embeddings: np.ndarray,
    image_embeddings: np.ndarray,
    caption_image: Sequence[int],
    ks: Sequence[int] = DEFAULT_KS,
) -> RetrievalMetrics:
    """All retrieval metrics from unit-length embeddings.

    Args:
        text_embeddings: (captions, dim) caption vectors.
        image_embeddings: (images, dim) image vectors.
        caption_image: the image index of each caption; every image needs one caption.
        ks: the cut-offs K.

    Raises:
        ValueError: shapes disagree, an index is out of range, an image has no caption,
            or a K is below 1.
    """
    scores = similarity(text_embeddings, image_embeddings)
    t2i, i2t = recall_at_k(scores, caption_image, ks)
    return RetrievalMetrics(
        text_to_image=t2i,
        image_to_text=i2t,
        text_to_image_mrr=float(np.mean(1.0 / text_to_image_ranks(scores, caption_image))),
        image_to_text_mrr=float(np.mean(1.0 / image_to_text_ranks(scores, caption_image))),
        images=int(scores.shape[1]),
        captions=int(scores.shape[0]),
    )


def _check(scores: np.ndarray, caption_image: Sequence[int]) -> None:
    shape = np.shape(scores)
    if len(shape) != 2 or shape[0] != len(caption_image):
        raise ValueError(f"scores {shape} need one row per caption ({len(caption_image)})")
    owners = np.asarray(caption_image, dtype=np.int64)
    if owners.size and (owners.min() < 0 or owners.max() >= shape[1]):
        raise ValueError("caption image index out of range")
    if len(np.unique(owners)) != shape[1]:
        raise ValueError("every image needs at least one caption")


def _tensor(scores: np.ndarray) -> torch.Tensor:
    import torch

    return torch.from_numpy(np.ascontiguousarray(scores))


def _clamp(k: int, pool: int) -> int:
    if k < 1:
        raise ValueError(f"K must be at least 1, got {k}")
    return min(k, pool)
