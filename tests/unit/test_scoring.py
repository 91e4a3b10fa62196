import numpy as np
import pytest

from searchengine.scoring import clip_score, ref_clip_score, with_prefix


def unit(*xs):
    v = np.asarray(xs, dtype=np.float64)
    return v / np.linalg.norm(v)


def test_clip_score_formula_on_hand_computed_vectors():
    c, v = unit(1, 0), unit(1, 1)  # cos = 1/sqrt(2)
    assert float(clip_score(np.dot(c, v))) == pytest.approx(2.5 / np.sqrt(2))
    assert float(clip_score(-0.3)) == 0.0  # negative similarity floors at zero
    assert clip_score(np.array([0.2, 0.4, -1.0])).tolist() == pytest.approx([0.5, 1.0, 0.0])
    assert with_prefix("a dog") == "A photo depicts a dog"


def test_ref_clip_score_is_the_harmonic_mean():
    cand, image = unit(1, 0, 0), unit(1, 1, 0)  # CLIP-S = 2.5 * 0.7071 = 1.7678
    refs = np.stack([unit(0, 0, 1), unit(3, 4, 0)])  # best reference cosine = 0.6
    clip_s, ref_s = 2.5 / np.sqrt(2), 0.6
    expected = 2 * clip_s * ref_s / (clip_s + ref_s)
    assert ref_clip_score(cand, image, refs) == pytest.approx(expected)
    assert ref_clip_score(cand, unit(-1, 0, 0), refs) == 0.0
