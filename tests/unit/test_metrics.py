"""Recall@K, MRR and correlations: parity with the reference implementations.

- Recall@K against CLIP_benchmark's own code (``clip_benchmark.metrics.zeroshot_retrieval``,
  installed as a test dependency): its ``evaluate`` driven end to end by a model that
  returns fixed embeddings, and its ``recall_at_k``/``batchify`` on tied scores.
- Correlations against ``scipy.stats``.
- Hand-made cases whose answers are worked out in the comments.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.stats
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from searchengine.evaluation.correlation import (
    correlations,
    kendall_tau_c,
    pearson,
    spearman,
)
from searchengine.evaluation.metrics import (
    image_to_text_hits,
    image_to_text_ranks,
    recall_at_k,
    retrieval_metrics,
    similarity,
    text_to_image_hits,
    text_to_image_ranks,
)

KS = [1, 2, 5, 10]

# The reference implementation, installed with `pip install --no-deps clip-benchmark`
# (see pyproject.toml: its declared dependencies are large and unused here).
try:
    from clip_benchmark.metrics import zeroshot_retrieval as cb
except ImportError:  # pragma: no cover
    cb = None
needs_clip_benchmark = pytest.mark.skipif(
    cb is None, reason="parity tests need: pip install --no-deps clip-benchmark"
)


# ----------------------------------------------------------------- CLIP_benchmark parity


class FixedModel(torch.nn.Module):
    """'Encodes' image i and text j as rows of fixed tables (inputs are indices)."""

    def __init__(self, images: torch.Tensor, texts: torch.Tensor) -> None:
        super().__init__()
        self.images, self.texts = images, texts

    def encode_image(self, index: torch.Tensor) -> torch.Tensor:
        return self.images[index]

    def encode_text(self, index: torch.Tensor) -> torch.Tensor:
        return self.texts[index]


def world(seed: int, n_images: int, dim: int, levels: int | None):
    """Raw embeddings; several captions per image (1 to 5); ``levels`` quantises for ties."""
    rng = np.random.default_rng(seed)
    per_image = rng.integers(1, 6, n_images)
    owners = np.repeat(np.arange(n_images), per_image)
    images = rng.normal(size=(n_images, dim))
    texts = images[owners] + rng.normal(scale=1.5, size=(len(owners), dim))
    if levels is not None:  # few distinct values: many exactly equal scores
        images = np.round(images.clip(-1, 1) * levels / 2)
        texts = np.round(texts.clip(-1, 1) * levels / 2)
        images[images.sum(1) == 0, 0] = 1  # no zero vectors
        texts[texts.sum(1) == 0, 0] = 1
        images[rng.integers(n_images)] = images[rng.integers(n_images)]  # a duplicate image
    return (
        torch.tensor(images, dtype=torch.float32),
        torch.tensor(texts, dtype=torch.float32),
        owners,
    )


def clip_benchmark_evaluate(images, texts, owners, batch_size, ks):
    """Run CLIP_benchmark's evaluate(); texts of a batch are listed per image, in order."""
    n = len(images)
    captions = [[j for j in range(len(owners)) if owners[j] == i] for i in range(n)]
    loader = [
        (torch.arange(s, min(s + batch_size, n)), captions[s : s + batch_size])
        for s in range(0, n, batch_size)
    ]
    model = FixedModel(images, texts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CPU autocast is disabled (amp=False) anyway
        return cb.evaluate(
            model, loader, lambda t: torch.tensor(t), "cpu", amp=False, recall_k_list=ks
        )


@needs_clip_benchmark
@pytest.mark.parametrize(
    ("seed", "n_images", "dim", "levels", "batch_size"),
    [
        (0, 40, 8, None, 16),  # continuous scores
        (1, 40, 6, 3, 7),  # heavy ties, odd batches
        (2, 200, 4, 2, 64),  # ties, several topk code paths
        (3, 12, 3, 1, 5),  # extreme ties: three levels per coordinate
    ],
)
def test_recall_equals_clip_benchmark_evaluate(seed, n_images, dim, levels, batch_size):
    images, texts, owners = world(seed, n_images, dim, levels)
    ks = [k for k in KS if k <= n_images]
    reference = clip_benchmark_evaluate(images, texts, owners, batch_size, ks)
    # the same embeddings CLIP_benchmark scores: its own normalisation applied once
    unit_images = F.normalize(images, dim=-1).numpy()
    unit_texts = F.normalize(texts, dim=-1).numpy()
    t2i, i2t = recall_at_k(similarity(unit_texts, unit_images), owners, ks)
    for k in ks:
        # CLIP_benchmark averages in float32; the hits themselves are compared exactly below
        assert t2i[k] == pytest.approx(reference[f"image_retrieval_recall@{k}"], abs=1e-6)
        assert i2t[k] == pytest.approx(reference[f"text_retrieval_recall@{k}"], abs=1e-6)


@needs_clip_benchmark
@pytest.mark.parametrize("n_images", [5, 10, 37, 150, pytest.param(1200, marks=pytest.mark.slow)])
def test_per_query_hits_equal_clip_benchmark_with_ties(n_images):
    images, texts, owners = world(n_images, n_images, 3, 1)
    scores = F.normalize(texts, dim=-1) @ F.normalize(images, dim=-1).t()
    assert len(torch.unique(scores)) <= 20  # a handful of values: ties everywhere
    ordered = scores.sort(dim=1, descending=True).values
    # ties straddle the cut-off, so which tied candidates topk keeps decides hits
    assert (ordered[:, 0] == ordered[:, 1]).any()
    positive = torch.zeros_like(scores, dtype=torch.bool)
    positive[torch.arange(len(scores)), torch.as_tensor(owners)] = True
    for k in [k for k in KS if k <= n_images]:
        theirs_t2i = cb.batchify(cb.recall_at_k, scores, positive, 32, "cpu", k=k) > 0
        theirs_i2t = cb.batchify(cb.recall_at_k, scores.T, positive.T, 32, "cpu", k=k) > 0
        ours_t2i = text_to_image_hits(scores.numpy(), owners, k)
        ours_i2t = image_to_text_hits(scores.numpy(), owners, k)
        assert np.array_equal(ours_t2i, theirs_t2i.numpy())
        assert np.array_equal(ours_i2t, theirs_i2t.numpy())


def test_similarity_is_the_torch_product_bit_for_bit():
    images, texts, _ = world(5, 30, 16, None)
    expected = (texts @ images.t()).numpy()
    assert np.array_equal(similarity(texts.numpy(), images.numpy()), expected)


# ---------------------------------------------------------------- hand-made known answers

# 3 images, 5 captions (image 0 has three). Rows are captions, columns images.
SCORES = np.array(
    [
        [0.9, 0.1, 0.0],  # caption 0 -> image 0: rank 1
        [0.2, 0.8, 0.1],  # caption 1 -> image 0: rank 2
        [0.1, 0.3, 0.7],  # caption 2 -> image 0: rank 3
        [0.5, 0.6, 0.4],  # caption 3 -> image 1: rank 1
        [0.3, 0.2, 0.1],  # caption 4 -> image 2: rank 3
    ],
    dtype=np.float32,
)
OWNERS = [0, 0, 0, 1, 2]


def test_text_to_image_by_hand():
    assert text_to_image_ranks(SCORES, OWNERS).tolist() == [1, 2, 3, 1, 3]
    t2i, _ = recall_at_k(SCORES, OWNERS, [1, 2, 3])
    assert t2i == {1: 2 / 5, 2: 3 / 5, 3: 1.0}


def test_image_to_text_by_hand():
    # Image 0 ranks captions by column 0: c0 .9, c3 .5, c4 .3, c1 .2, c2 .1 -> best own c0: 1.
    # Image 1, column 1: c1 .8, c3 .6 (own) -> rank 2.
    # Image 2, column 2: c2 .7, c3 .4, c1 .1, c4 .1 (own, tied with c1) -> 3 better or
    # tied non-relevant captions -> rank 4 (ties count against the model).
    assert image_to_text_ranks(SCORES, OWNERS).tolist() == [1, 2, 4]
    _, i2t = recall_at_k(SCORES, OWNERS, [1, 2, 5])
    assert i2t[1] == pytest.approx(1 / 3)
    assert i2t[2] == pytest.approx(2 / 3)
    assert i2t[5] == 1.0  # K = all captions: every image is found


def test_mrr_by_hand():
    texts = np.array([[1, 0], [0, 1], [1, 0]], dtype=np.float32)  # caption 2 is caption 0
    images = np.array([[1, 0], [0.6, 0.8]], dtype=np.float32)
    # scores: c0 [1, .6] -> own image 0 rank 1; c1 [0, .8] -> image 1 rank 1;
    # c2 [1, .6] -> own image 1 rank 2.  t2i MRR = (1 + 1 + 1/2) / 3.
    # image 0 column [1, 0, 1]: own c0 ties with c2 (not its) -> rank 2;
    # image 1 column [.6, .8, .6]: own c1 best -> rank 1.  i2t MRR = (1/2 + 1) / 2.
    metrics = retrieval_metrics(texts, images, [0, 1, 1], ks=[1])
    assert metrics.text_to_image_mrr == pytest.approx(2.5 / 3)
    assert metrics.image_to_text_mrr == pytest.approx(0.75)
    assert (metrics.images, metrics.captions) == (2, 3)


def test_constant_scores_give_worst_mrr_not_best():
    scores = np.zeros((4, 4), dtype=np.float32)
    assert text_to_image_ranks(scores, [0, 1, 2, 3]).tolist() == [4, 4, 4, 4]
    assert image_to_text_ranks(scores, [0, 1, 2, 3]).tolist() == [4, 4, 4, 4]


def test_k_beyond_the_pool_is_clamped():
    t2i, i2t = recall_at_k(SCORES, OWNERS, [100])
    assert t2i == {100: 1.0} and i2t == {100: 1.0}


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="one row per caption"):
        recall_at_k(SCORES, OWNERS[:-1], [1])
    with pytest.raises(ValueError, match="at least one caption"):
        recall_at_k(SCORES[:, :2].copy(), [0, 0, 0, 0, 0], [1])
    with pytest.raises(ValueError, match="at least 1"):
        recall_at_k(SCORES, OWNERS, [0])


# --------------------------------------------------------------------------- correlations


def test_correlations_by_hand():
    # x = 1,2,3 and y = 1,3,2: concordant pairs (1,2), (1,3); discordant (2,3).
    # tau-c = 2 (2 - 1) / (3^2 (3 - 1) / 3) = 1/3; r = rho = 0.5.
    assert kendall_tau_c([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    assert pearson([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    # Ties in y: 4 concordant pairs, none discordant, m = min(4, 2) = 2:
    # tau-c = 2 * 4 / (16 * 1/2) = 1, where tau-b would be below 1.
    assert kendall_tau_c([1, 2, 3, 4], [1, 1, 2, 2]) == pytest.approx(1.0)
    assert spearman([10, 20, 30, 40], [1, 4, 9, 16]) == pytest.approx(1.0)  # monotone
    assert pearson([1, 2, 3, 4], [8, 6, 4, 2]) == pytest.approx(-1.0)


def test_degenerate_correlations_are_nan():
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))
    assert math.isnan(kendall_tau_c([2, 2], [1, 2]))
    assert math.isnan(spearman([1], [1]))
    with pytest.raises(ValueError, match="equal lengths"):
        correlations([1, 2], [1, 2, 3])


ratings = st.lists(st.integers(1, 4), min_size=3, max_size=60)


# scipy warns when an input is nearly constant (e.g. [2.5, 2.5, 2.4999999999999996]):
# its own result may then be inaccurate. Ours still matches it to 1e-12 there (below).
@pytest.mark.filterwarnings("ignore::scipy.stats.NearConstantInputWarning")
@settings(max_examples=200, deadline=None)
@given(data=st.data(), y=ratings)
def test_correlations_match_scipy(data, y):
    # Metric values with many ties (like CLIP-S on short captions) or continuous.
    # (no subnormal floats: scipy itself loses precision on them)
    floats = st.floats(0, 2.5, allow_nan=False, allow_subnormal=False)
    values = floats if data.draw(st.booleans()) else st.integers(0, 5)
    x = data.draw(st.lists(values, min_size=len(y), max_size=len(y)))
    ours = correlations(x, y)
    constant = len(set(x)) < 2 or len(set(y)) < 2
    if constant:
        assert math.isnan(ours.pearson) and math.isnan(ours.kendall_tau_c)
        return
    assert ours.pearson == pytest.approx(scipy.stats.pearsonr(x, y)[0], abs=1e-12)
    assert ours.spearman == pytest.approx(scipy.stats.spearmanr(x, y)[0], abs=1e-12)
    tau = scipy.stats.kendalltau(x, y, variant="c")[0]
    assert ours.kendall_tau_c == pytest.approx(tau, abs=1e-12)
    assert ours.n == len(y)


@pytest.mark.filterwarnings("ignore::scipy.stats.NearConstantInputWarning")
def test_a_nearly_constant_metric_still_matches_scipy():
    # Found by the property test above: two CLIP-S values one rounding step apart.
    x = [2.5, 2.5, 2.4999999999999996]
    for y in ([1, 2, 3], [1, 1, 2], [2, 1, 4]):
        ours = correlations(x, y)
        assert ours.pearson == pytest.approx(scipy.stats.pearsonr(x, y)[0], abs=1e-12)
        assert ours.spearman == pytest.approx(scipy.stats.spearmanr(x, y)[0], abs=1e-12)
        tau = scipy.stats.kendalltau(x, y, variant="c")[0]
        assert ours.kendall_tau_c == pytest.approx(tau, abs=1e-12)


def test_tau_c_on_a_large_rating_set_matches_scipy():
    rng = np.random.default_rng(0)
    y = rng.integers(1, 5, 20000).astype(float)
    x = y + rng.normal(size=y.size)
    assert kendall_tau_c(x, y) == pytest.approx(
        scipy.stats.kendalltau(x, y, variant="c")[0], abs=1e-12
    )
