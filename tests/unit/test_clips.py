"""CLIPS text input, torch-free: which configs are CLIPS, and the exact token layout.

The reference layout (CLIPS repo ``open_clip/tokenizer.py`` at f0c8140, open_clip PR #1081):
``[1] + ids[:ctx-3] + [2]``, padded with 0 to ``ctx-1``, ``101`` in the last slot.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tokenizers.implementations import BertWordPieceTokenizer

from searchengine.errors import ModelError, UnknownModelError
from searchengine.models.clips import ClipsTokenizer, pack, text_layout

# The CLIPS text_cfg as published first (hub commit pages f712f6c / 3ed7286), tiny widths.
CLIPS_TEXT = {
    "context_length": 80,
    "vocab_size": 32000,
    "hf_tokenizer_name": "bert-base-uncased",
    "tokenizer_kwargs": {"strip_sep_token": True},
    "width": 768,
    "heads": 12,
    "layers": 12,
    "pool_type": "last",
    "no_causal_mask": True,
    "act_kwargs": {"approximate": "tanh"},
}
# open_clip's ViT-L-14-CLIPA.json text_cfg: the same tower and tokenizer, 32 tokens, and
# trained on plain BERT tokens ([CLS] ... [SEP->0]): must not be taken for CLIPS.
CLIPA_TEXT = {**CLIPS_TEXT, "context_length": 32}
del CLIPA_TEXT["act_kwargs"]
L14 = "UCSC-VLAA/ViT-L-14-CLIPS-Recap-DataComp-1B"
H14 = "UCSC-VLAA/ViT-H-14-CLIPS-224-Recap-DataComp-1B"


def cfg(**text: object) -> dict[str, object]:
    return {"embed_dim": 768, "vision_cfg": {}, "text_cfg": text}


@pytest.mark.parametrize(
    ("text", "name", "layout"),
    [
        (
            CLIPS_TEXT,
            L14,
            "clips",
        ),  # first published layout: nothing in it says CLIPS but the shape
        (CLIPS_TEXT, H14, "clips"),
        (CLIPS_TEXT, "/home/me/models/reranker", "clips"),  # a renamed local copy: 80 tokens
        ({**CLIPS_TEXT, "tokenizer_mode": "clips", "hf_tokenizer_name": L14}, L14, "clips"),
        ({**CLIPS_TEXT, "tokenizer_mode": "bert_clips"}, "x/y", "clips"),  # open_clip e2f3576
        ({**CLIPA_TEXT}, "timm/ViT-L-14-CLIPA", "open_clip"),
        ({**CLIPA_TEXT}, "/models/my-CLIPS-finetune", "clips"),  # the name says so
        ({**CLIPS_TEXT, "pool_type": "argmax"}, L14, "open_clip"),  # not CLIPS' tower
        ({**CLIPS_TEXT, "hf_model_name": "bert-base-uncased"}, L14, "open_clip"),  # HF tower
        ({"context_length": 77, "vocab_size": 49408}, "ViT-B-32", "open_clip"),
        ({**CLIPA_TEXT}, "/models/ECLIPSE-net", "open_clip"),  # "CLIPS" inside a word
    ],
)
def test_text_layout(text: dict[str, object], name: str, layout: str) -> None:
    assert text_layout(cfg(**text), name) == layout


def test_an_unknown_tokenizer_mode_is_refused_with_one_line() -> None:
    with pytest.raises(UnknownModelError) as info:
        text_layout(cfg(**{**CLIPS_TEXT, "tokenizer_mode": "clips2"}), L14)
    message = str(info.value)
    assert "'clips2'" in message and "refusing" in message and "\n" not in message


def reference(ids: list[int], ctx: int = 80) -> list[int]:
    """The CLIPS authors' CustomTokenizer, written out: bos, ids, eos, pad to ctx-1, class."""
    body = [1, *ids[: ctx - 3], 2]
    return body + [0] * (ctx - 1 - len(body)) + [101]


@pytest.mark.parametrize("n", [0, 1, 5, 76, 77, 78, 200])
def test_pack_is_the_reference_layout(n: int) -> None:
    ids = list(range(1000, 1000 + n))
    row = pack([ids], 80)[0].tolist()
    assert row == reference(ids)
    assert len(row) == 80 and row[-1] == 101 and row[0] == 1
    assert row.count(2) == 1 and row.index(2) == min(n, 77) + 1


VOCAB = (
    ["[PAD]"]
    + [f"[unused{i}]" for i in range(99)]
    + ["[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "circle", "!", ",", "##s", "dog", "."]
)


@pytest.fixture(params=["tokenizer.json", "vocab.txt"])
def tokenizer_file(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n")
    if request.param == "vocab.txt":
        return vocab
    path = tmp_path / "tokenizer.json"
    path.write_text(BertWordPieceTokenizer(str(vocab), lowercase=True).to_str())
    return path


def test_tokenizer_gives_the_reference_ids(tokenizer_file: Path) -> None:
    ids = {w: i for i, w in enumerate(VOCAB)}
    tok = ClipsTokenizer(tokenizer_file, 80)
    rows = tok(["A red circle!", "  RED   dogs , a circle.", "", "naïve cat"]).tolist()
    a, red, circle, bang = ids["a"], ids["red"], ids["circle"], ids["!"]
    assert rows[0] == reference([a, red, circle, bang])
    assert rows[1] == reference([red, ids["dog"], ids["##s"], ids[","], a, circle, ids["."]])
    assert rows[2] == reference([])
    assert rows[3] == reference([100, 100])  # unknown words are [UNK]
    long = tok(["red " * 100])[0].tolist()
    assert long == reference([red] * 77)  # truncated: 77 words, eos in slot 78, class in 79


def test_a_vocabulary_that_is_not_berts_is_refused(tmp_path: Path) -> None:
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[CLS]", "[PAD]", "[UNK]", "[SEP]", "a"]) + "\n")
    with pytest.raises(ModelError, match=r"\[CLS\]=0.*refusing"):
        ClipsTokenizer(vocab, 80)


def test_an_unreadable_tokenizer_is_a_model_error(tmp_path: Path) -> None:
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(ModelError, match="cannot read"):
        ClipsTokenizer(bad, 80)


def test_a_vocabulary_larger_than_the_text_tower_is_refused(tokenizer_file: Path) -> None:
    with pytest.raises(ModelError, match="at most 50 tokens"):
        ClipsTokenizer(tokenizer_file, 80, vocab_limit=50)


def test_the_saved_tokenizer_gives_the_same_ids(tokenizer_file: Path, tmp_path: Path) -> None:
    tok = ClipsTokenizer(tokenizer_file, 80)
    saved = tmp_path / "saved" / "tokenizer.json"
    saved.parent.mkdir()
    saved.write_text(tok.to_json())
    json.loads(saved.read_text())
    texts = ["A red circle!", "dogs, dogs.", "x" * 300]
    np.testing.assert_array_equal(ClipsTokenizer(saved, 80)(texts), tok(texts))
