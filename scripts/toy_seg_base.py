"""The ``toy`` CLIP as the frozen base of ``toy-seg``: its towers in CLIPSeg's layout.

Used by ``train_toy_seg.py``. Two parts:

- the tokenizer: CLIP's byte-level BPE cut down to what toy phrases use. The byte
  alphabet (512 tokens) is kept whole, so any text still tokenizes; of CLIP's 48,894
  merges only those that CLIP's own BPE applies to ``WORDS`` are kept, in their original
  order, so those words split exactly as the full tokenizer splits them (checked on every
  phrase shape training uses). The token embedding keeps the rows of the kept tokens:
  the vocabulary shrinks from 49,408 to under 700 tokens (12.6 MB to 0.2 MB of weights).
- the weights: open_clip's names and fused attention projections into transformers'
  CLIPSeg (``in_proj`` split into q, k, v; ``c_fc``/``c_proj`` to ``fc1``/``fc2``;
  projections transposed), the same mapping as transformers' own conversion script for
  the original CLIPSeg checkpoints. ``check_towers`` compares both models' embeddings.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from searchengine.toy import world as toyworld

# Words toy phrases are made of; they and the byte alphabet make the vocabulary.
WORDS = (
    *toyworld.SHAPES, *toyworld.COLORS, *toyworld.SIZES,
    "top", "bottom", "left", "right", "center", "centre", "middle",
    "a", "an", "the", "at", "in", "of", "on", "and", "is", "where", "photo", "depicts",
    "picture", "image", "object", "shape", "thing",
)  # fmt: skip
SPECIALS = ("<|startoftext|>", "<|endoftext|>")


def _used_merges(word: str, ranks: dict[tuple[str, str], int]) -> set[tuple[str, str]]:
    """The merges CLIP's BPE applies to one word (lowest rank first, as it does)."""
    symbols = [*word[:-1], word[-1] + "</w>"]
    used = set()
    while len(symbols) > 1:
        pairs = set(itertools.pairwise(symbols))
        best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
        if best not in ranks:
            break
        used.add(best)
        merged, i = [], 0
        while i < len(symbols):
            if i < len(symbols) - 1 and (symbols[i], symbols[i + 1]) == best:
                merged.append(symbols[i] + symbols[i + 1])
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return used


def cut_vocabulary(
    tokenizer: Any, words: Iterable[str] = WORDS
) -> tuple[list[str], list[tuple[str, str]]]:
    """Tokens (new id order) and merges (original rank order) of the cut-down BPE."""
    ranks: dict[tuple[str, str], int] = tokenizer.bpe_ranks
    merges: set[tuple[str, str]] = set()
    for word in words:
        encoded = "".join(tokenizer.byte_encoder[b] for b in word.encode("utf-8"))
        merges |= _used_merges(encoded, ranks)
    kept = sorted(merges, key=ranks.__getitem__)
    alphabet = [tokenizer.decoder[i] for i in range(512)]  # bytes, then bytes + </w>
    tokens = [*alphabet, *dict.fromkeys(a + b for a, b in kept), *SPECIALS]
    return tokens, kept


def write_tokenizer_files(
    out_dir: Path, tokens: Sequence[str], merges: Sequence[tuple[str, str]], max_length: int
) -> None:
    """vocab.json, merges.txt, special_tokens_map.json, tokenizer_config.json."""
    specials = {
        "bos_token": SPECIALS[0],
        "eos_token": SPECIALS[1],
        "unk_token": SPECIALS[1],
        "pad_token": SPECIALS[1],
    }
    files = {
        "vocab.json": json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False),
        "merges.txt": "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
        "special_tokens_map.json": json.dumps(specials, indent=2),
        "tokenizer_config.json": json.dumps(
            {
                "tokenizer_class": "CLIPTokenizer",
                "processor_class": "CLIPSegProcessor",
                "do_lower_case": True,
                "errors": "replace",
                "add_prefix_space": False,
                "model_max_length": max_length,
                **specials,
            },
            indent=2,
        ),
    }
    for name, text in files.items():
        (out_dir / name).write_text(text + ("" if text.endswith("\n") else "\n"), "utf-8")


def check_tokens(hf_tokenizer: Any, clip_tokenizer: Any, texts: Iterable[str]) -> None:
    """Every text splits into the same token strings under both tokenizers."""
    for text in texts:
        ours = hf_tokenizer.convert_ids_to_tokens(hf_tokenizer(text)["input_ids"])
        theirs = [clip_tokenizer.decoder[i] for i in clip_tokenizer.encode(text)]
        if ours[1:-1] != theirs:
            raise SystemExit(f"tokenizers disagree on {text!r}: {ours} vs {theirs}")


def _block(
    prefix: str, src: dict[str, torch.Tensor], dst: str, width: int
) -> dict[str, torch.Tensor]:
    q, k, v = src[f"{prefix}.attn.in_proj_weight"].split(width)
    qb, kb, vb = src[f"{prefix}.attn.in_proj_bias"].split(width)
    return {
        f"{dst}.self_attn.q_proj.weight": q, f"{dst}.self_attn.q_proj.bias": qb,
        f"{dst}.self_attn.k_proj.weight": k, f"{dst}.self_attn.k_proj.bias": kb,
        f"{dst}.self_attn.v_proj.weight": v, f"{dst}.self_attn.v_proj.bias": vb,
        f"{dst}.self_attn.out_proj.weight": src[f"{prefix}.attn.out_proj.weight"],
        f"{dst}.self_attn.out_proj.bias": src[f"{prefix}.attn.out_proj.bias"],
        f"{dst}.layer_norm1.weight": src[f"{prefix}.ln_1.weight"],
        f"{dst}.layer_norm1.bias": src[f"{prefix}.ln_1.bias"],
        f"{dst}.layer_norm2.weight": src[f"{prefix}.ln_2.weight"],
        f"{dst}.layer_norm2.bias": src[f"{prefix}.ln_2.bias"],
        f"{dst}.mlp.fc1.weight": src[f"{prefix}.mlp.c_fc.weight"],
        f"{dst}.mlp.fc1.bias": src[f"{prefix}.mlp.c_fc.bias"],
        f"{dst}.mlp.fc2.weight": src[f"{prefix}.mlp.c_proj.weight"],
        f"{dst}.mlp.fc2.bias": src[f"{prefix}.mlp.c_proj.bias"],
    }  # fmt: skip


def tower_weights(
    clip: torch.nn.Module, tokenizer: Any, tokens: Sequence[str]
) -> dict[str, torch.Tensor]:
    """The open_clip model's towers as ``CLIPSegForImageSegmentation`` ``clip.*`` weights."""
    src = {k: v.detach().float() for k, v in clip.state_dict().items()}
    text_w, vision_w = src["ln_final.weight"].numel(), src["visual.ln_pre.weight"].numel()
    # open_clip names the specials <start_of_text>/<end_of_text>; transformers' CLIP
    # vocabularies <|startoftext|>/<|endoftext|>: same ids, other spelling.
    special = dict(zip(SPECIALS, (tokenizer.sot_token_id, tokenizer.eot_token_id), strict=True))
    ids = torch.tensor([special.get(t, tokenizer.encoder.get(t)) for t in tokens])
    out = {
        "text_model.embeddings.token_embedding.weight": src["token_embedding.weight"][ids],
        "text_model.embeddings.position_embedding.weight": src["positional_embedding"],
        "text_model.final_layer_norm.weight": src["ln_final.weight"],
        "text_model.final_layer_norm.bias": src["ln_final.bias"],
        "text_projection.weight": src["text_projection"].T,
        "vision_model.embeddings.class_embedding": src["visual.class_embedding"],
        "vision_model.embeddings.patch_embedding.weight": src["visual.conv1.weight"],
        "vision_model.embeddings.position_embedding.weight": src["visual.positional_embedding"],
        "vision_model.pre_layrnorm.weight": src["visual.ln_pre.weight"],
        "vision_model.pre_layrnorm.bias": src["visual.ln_pre.bias"],
        "vision_model.post_layernorm.weight": src["visual.ln_post.weight"],
        "vision_model.post_layernorm.bias": src["visual.ln_post.bias"],
        "visual_projection.weight": src["visual.proj"].T,
        "logit_scale": src["logit_scale"],
    }
    for i in range(len(clip.transformer.resblocks)):
        out |= _block(f"transformer.resblocks.{i}", src, f"text_model.encoder.layers.{i}", text_w)
    for i in range(len(clip.visual.transformer.resblocks)):
        out |= _block(
            f"visual.transformer.resblocks.{i}", src, f"vision_model.encoder.layers.{i}", vision_w
        )
    return {f"clip.{k}": v.contiguous() for k, v in out.items()}


@torch.no_grad()
def check_towers(
    seg: Any,
    clip: Any,
    clip_tokenizer: Any,
    processor: Any,
    texts: Sequence[str],
    pixels: torch.Tensor,
) -> float:
    """Lowest cosine between the two models' text and image embeddings (should be ~1)."""
    ids = processor.tokenizer(list(texts), padding=True, return_tensors="pt")
    ours = seg.clip.get_text_features(**ids)
    ours = getattr(ours, "pooler_output", ours)
    theirs = clip.encode_text(clip_tokenizer(list(texts)))
    text_cos = torch.nn.functional.cosine_similarity(ours, theirs).min()
    mine = seg.clip.get_image_features(pixel_values=pixels)
    mine = getattr(mine, "pooler_output", mine)
    image_cos = torch.nn.functional.cosine_similarity(mine, clip.encode_image(pixels)).min()
    return float(min(text_cos, image_cos))
