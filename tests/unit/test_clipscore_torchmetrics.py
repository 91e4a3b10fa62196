"""Our CLIPScore and RefCLIPScore against torchmetrics' ``CLIPScore`` on the same model.

Both sides run the fake hub's transformers CLIP (``openai/clip-vit-base-patch32``, tiny,
random weights), torchmetrics loading it by repo id through its own code path, offline.
torchmetrics reports ``max(100 * mean_batch(cos), 0)`` and encodes the text as given;
ours is ``2.5 * max(cos, 0)`` per pair, with the text prefixed "A photo depicts " by the
search code (``scoring.with_prefix``), not by ``clip_score`` itself.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fakehub import HF_CLIP_REPO_ID
from imagegen import noise
from PIL import Image
from torchmetrics.multimodal import CLIPScore

from searchengine.models import Encoder, load_encoder
from searchengine.ranking import clip_scores, embed_terms, query_terms
from searchengine.scoring import CLIPSCORE_WEIGHT, clip_score, ref_clip_score, with_prefix

pytestmark = pytest.mark.slow

CAPTIONS = [
    "a red circle",
    "kids building a sandcastle on the beach",
    "a dog",
    "the large blue square in the top left",
    "a photo of a cat",
]


@pytest.fixture
def images(tmp_path) -> list[Image.Image]:
    return [Image.open(noise(tmp_path / f"{i}.png", seed=i, fmt="PNG")) for i in range(4)]


@pytest.fixture
def ours(offline_hub) -> Encoder:
    return load_encoder(f"hf:{HF_CLIP_REPO_ID}", "cpu")


class _TensorFeatures(torch.nn.Module):
    """A ``CLIPModel`` whose ``get_*_features`` return the projected embedding tensor.

    transformers 5 returns a ``BaseModelOutputWithPooling`` there (the projected embedding
    in ``pooler_output``) where 4.x returned the tensor; torchmetrics 1.9 normalises the
    return value directly and fails with "AttributeError: 'BaseModelOutputWithPooling'
    object has no attribute 'norm'". Only the return type is adapted: same model object,
    same weights, torchmetrics' own processor and arithmetic.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.config = model.config

    def get_image_features(self, *args: object, **kwargs: object) -> torch.Tensor:
        return self.model.get_image_features(*args, **kwargs).pooler_output

    def get_text_features(self, *args: object, **kwargs: object) -> torch.Tensor:
        return self.model.get_text_features(*args, **kwargs).pooler_output


@pytest.fixture
def theirs(offline_hub) -> CLIPScore:
    # Loaded by repo id through torchmetrics' own code (CLIPModel/CLIPProcessor
    # .from_pretrained), offline from the fake hub cache.
    metric = CLIPScore(model_name_or_path=HF_CLIP_REPO_ID)
    probe = metric.processor(text=["a"], return_tensors="pt")
    if not isinstance(metric.model.get_text_features(**probe), torch.Tensor):
        metric.model = _TensorFeatures(metric.model)
    return metric


def _tensor(image: Image.Image) -> torch.Tensor:
    """A uint8 (3, H, W) tensor, the image form torchmetrics takes."""
    return torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)


def _score(metric: CLIPScore, source: object, target: object) -> float:
    metric.reset()
    metric.update(source, target)
    return float(metric.compute())


def _torchmetrics_pairs(metric: CLIPScore, images: list[Image.Image], texts: list[str]):
    """torchmetrics' score of every (image, text) pair, one pair per update."""
    return np.array([[_score(metric, _tensor(im), t) for t in texts] for im in images])


def test_clipscore_is_torchmetrics_times_2_5_over_100(images, ours, theirs):
    # Plain and prefixed captions: the random model gives negative cosines to most pairs
    # and positive ones to some, so both sides of the clamp are exercised.
    texts = CAPTIONS + [with_prefix(c) for c in CAPTIONS]
    cos = ours.encode_images(images) @ ours.encode_texts(texts).T
    assert (cos > 0.01).sum() >= 4 and (cos < -0.01).sum() >= 4
    reference = _torchmetrics_pairs(theirs, images, texts)
    np.testing.assert_allclose(reference, 100 * np.maximum(cos, 0), rtol=0, atol=1e-4)
    np.testing.assert_allclose(clip_score(cos), CLIPSCORE_WEIGHT / 100 * reference, atol=1e-6)


def test_torchmetrics_averages_the_batch_before_clamping(images, ours, theirs):
    # Why the comparison above goes pair by pair: one update with N pairs reports
    # max(100 * mean(cos), 0), not the mean of per-pair scores.
    # Two pairs the random model scores above zero and two below, whatever its weights.
    captions = CAPTIONS + [with_prefix(c) for c in CAPTIONS]
    matrix = ours.encode_images(images) @ ours.encode_texts(captions).T
    order = np.argsort(matrix, axis=None)
    picked = [np.unravel_index(i, matrix.shape) for i in (*order[:2], *order[-2:])]
    cos = np.asarray([matrix[i, j] for i, j in picked])
    assert (cos > 0).any() and (cos < 0).any()
    texts = [captions[j] for _, j in picked]
    batch = _score(theirs, torch.stack([_tensor(images[i]) for i, _ in picked]), texts)
    assert batch == pytest.approx(max(100 * float(np.mean(cos)), 0.0), abs=1e-4)
    assert batch != pytest.approx(float(np.mean(100 * np.maximum(cos, 0))), abs=1e-3)


def test_search_clipscore_is_torchmetrics_on_the_prefixed_query(images, ours, theirs):
    # What `searchengine search` reports as clip_score: the query prefixed, weight 2.5.
    query = "the large blue square in the top left"
    vector = embed_terms(query_terms(query), ours, clipscore=True)
    reported = clip_scores(ours.encode_images(images), vector)
    reference = _torchmetrics_pairs(theirs, images, [with_prefix(query)])[:, 0]
    assert (reference > 0).all()
    np.testing.assert_allclose(reported, CLIPSCORE_WEIGHT / 100 * reference, atol=1e-6)


def test_refclipscore_from_torchmetrics_image_text_and_text_text(images, ours, theirs):
    # RefCLIP-S = H(CLIP-S(c, v), max(max_r cos(c, r), 0)); torchmetrics scores both parts:
    # image-text for the first, text-text for the second.
    candidates = [with_prefix(c) for c in CAPTIONS]
    cand = ours.encode_texts(candidates)
    vis = ours.encode_images(images)
    for ci, candidate in enumerate(candidates):
        refs = [c for c in candidates if c != candidate]
        text_scores = [_score(theirs, candidate, r) / 100 for r in refs]
        ref_s = max(text_scores)
        for vi, image in enumerate(images):
            clip_s = CLIPSCORE_WEIGHT / 100 * _score(theirs, _tensor(image), candidate)
            expected = 0.0 if min(clip_s, ref_s) <= 0 else 2 * clip_s * ref_s / (clip_s + ref_s)
            got = ref_clip_score(cand[ci], vis[vi], ours.encode_texts(refs))
            assert got == pytest.approx(expected, abs=1e-5)
    # Not all zero: some candidates score above 0 against both image and references.
    assert any(
        ref_clip_score(cand[ci], vis[vi], np.delete(cand, ci, axis=0)) > 0
        for ci in range(len(candidates))
        for vi in range(len(images))
    )
