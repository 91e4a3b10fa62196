"""CLIPS text input: which models are CLIPS, and the exact token layout they were trained on.

CLIPS (UCSC-VLAA, arXiv 2411.16828) has a bidirectional text tower that pools its *last*
position. Its authors trained it on bert-base-uncased WordPiece ids laid out as (CLIPS repo,
``open_clip/tokenizer.py`` at f0c8140: ``CustomTokenizer(vocab_file, context_length=80,
bos_token=1, eos_token=2, class_token=101, pad_token=0)``; open_clip PR #1081, commit e2f3576,
``HFTokenizer._clips_tokenize``)::

    [1] + wordpiece_ids(text)[: ctx - 3] + [2], padded with 0 to ctx - 1, then 101

The hub repos have been published with a config that does not say so
(``hf_tokenizer_name: "bert-base-uncased"``, ``strip_sep_token``, no ``tokenizer_mode``).
open_clip then tokenizes as plain BERT, ``[CLS] text [SEP->0] pad``: the pooled last slot holds
padding and every text vector is wrong, with no error. And where a config does say
``tokenizer_mode: "clips"``, open_clip takes bos and eos from the tokenizer files, which in the
CLIPS repos define neither. So searchengine decides what is CLIPS itself (:func:`text_layout`)
and builds the layout above with fixed ids, in both runtimes (:class:`ClipsTokenizer` is
torch-free; the ONNX export saves what it needs).

This module imports only numpy and ``tokenizers``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from searchengine.errors import ModelError, UnknownModelError
from searchengine.models.textclean import clean_text

# The CLIPS authors' ids, in bert-base-uncased's vocabulary: [unused0], [unused1], [PAD], [CLS].
BOS, EOS, PAD, CLS = 1, 2, 0, 101
# open_clip 3.0-3.3 knows "clips"; "bert_clips" was the same layout in open_clip's commit
# e2f3576 (May 2025) before it became "clips".
CLIPS_MODES = ("clips", "bert_clips")
# Every CLIPS config on the hub has 80 tokens; CLIPA, the same authors' earlier model with the
# same text tower shape and plain BERT tokens, has 32 (open_clip's ViT-*-CLIPA*.json).
CLIPS_CONTEXT = 80
_NAME = re.compile(r"(?<![A-Za-z])CLIPS(?![A-Za-z])")
# Files a WordPiece tokenizer can be read from, in order of preference.
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")


def text_layout(model_cfg: Mapping[str, Any], name: str) -> str:
    """``"clips"`` if the model's texts must be laid out as CLIPS', else ``"open_clip"``.

    CLIPS is recognised by its config: ``tokenizer_mode: "clips"``, or the CLIPS text tower
    (a BERT tokenizer feeding open_clip's own transformer, pooled on its last token, without
    a causal mask) together with the name of the repo or folder, or CLIPS' 80-token context.

    Args:
        model_cfg: the ``model_cfg`` of ``open_clip_config.json`` (or a builtin config).
        name: the hub repo id or folder the model comes from.

    Raises:
        UnknownModelError: the config asks for a tokenizer mode this release cannot
            reproduce; ranking with another tokenization would be silently wrong.
    """
    text = model_cfg.get("text_cfg") or {}
    mode = str(text.get("tokenizer_mode") or "")
    if mode in CLIPS_MODES:
        return "clips"
    if mode:
        raise UnknownModelError(
            f"{name} asks for tokenizer_mode {mode!r} in its open_clip config, which searchengine "
            "cannot reproduce; refusing it rather than rank with wrongly tokenized texts"
        )
    shaped = (
        bool(text.get("hf_tokenizer_name"))
        and not text.get("hf_model_name")
        and text.get("pool_type") == "last"
        and bool(text.get("no_causal_mask"))
    )
    if shaped and (_NAME.search(name) or text.get("context_length") == CLIPS_CONTEXT):
        return "clips"
    return "open_clip"


def pack(token_ids: Sequence[Sequence[int]], context_length: int) -> np.ndarray:
    """CLIPS rows: bos, the first ``context_length - 3`` ids, eos, padding, class token last."""
    out = np.full((len(token_ids), context_length), PAD, dtype=np.int64)
    for row, ids in enumerate(token_ids):
        body = list(ids[: context_length - 3])
        out[row, : len(body) + 2] = [BOS, *body, EOS]
        out[row, -1] = CLS
    return out


class ClipsTokenizer:
    """Texts into CLIPS token ids, int64 numpy ``(N, context_length)``.

    Args:
        path: the WordPiece tokenizer: a ``tokenizer.json`` or a BERT ``vocab.txt`` (read
            lower-casing, as the CLIPS authors' ``BertWordPieceTokenizer(lowercase=True)``).
        context_length: tokens per text (80 for every CLIPS model).
        clean: open_clip's cleaning mode, ``whitespace`` unless the config's
            ``tokenizer_kwargs`` say otherwise (open_clip's ``HFTokenizer`` default).
        vocab_limit: the text tower's ``vocab_size``; a larger tokenizer cannot be right.

    Raises:
        ModelError: the vocabulary is not bert-base-uncased's layout (``[PAD]`` 0,
            ``[CLS]`` 101), so the CLIPS ids would mean other tokens.
    """

    def __init__(
        self,
        path: Path,
        context_length: int = CLIPS_CONTEXT,
        clean: str = "whitespace",
        vocab_limit: int | None = None,
    ) -> None:
        from tokenizers import Tokenizer

        self.path = Path(path)
        try:
            if self.path.name == "vocab.txt":
                from tokenizers.implementations import BertWordPieceTokenizer

                self.tokenizer = Tokenizer.from_str(
                    BertWordPieceTokenizer(str(self.path), lowercase=True).to_str()
                )
            else:
                self.tokenizer = Tokenizer.from_file(str(self.path))
        except Exception as exc:  # the Rust library raises plain Exception for a bad file
            raise ModelError(f"cannot read {self.path} as a WordPiece tokenizer: {exc}") from exc
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.context_length = int(context_length)
        self.clean = clean
        size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        pad, cls = self.tokenizer.token_to_id("[PAD]"), self.tokenizer.token_to_id("[CLS]")
        if (pad, cls) != (PAD, CLS) or (vocab_limit is not None and size > vocab_limit):
            raise ModelError(
                f"{self.path} is not a bert-base-uncased WordPiece vocabulary "
                f"([PAD]={pad}, [CLS]={cls}, {size} tokens; CLIPS needs [PAD]=0, [CLS]=101"
                f"{f', at most {vocab_limit} tokens' if vocab_limit else ''}): refusing it "
                "rather than rank with wrongly tokenized texts"
            )

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        cleaned = [clean_text(t, self.clean) for t in texts]
        encoded = self.tokenizer.encode_batch(cleaned, add_special_tokens=False)
        return pack([enc.ids for enc in encoded], self.context_length)

    def to_json(self) -> str:
        """The backend tokenizer, for an export to reload without the original files."""
        return str(self.tokenizer.to_str())
