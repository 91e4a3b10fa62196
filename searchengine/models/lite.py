"""Torch-free twins of open_clip's tokenizers and image transform.

A cold ``searchengine search`` should pay only for what it needs: a text tower in
ONNX Runtime, a tokenizer and numpy. open_clip's tokenizers return torch tensors
and its transform is torchvision, so both are reproduced here on numpy and PIL.
They are only ever used after ``onnx_export`` checked, at export time, that they
give the same token ids and (to float rounding) the same pixels as open_clip.

- ``ClipBpeTokenizer``: open_clip's ``SimpleTokenizer`` (OpenAI CLIP's byte-level
  BPE), ported from open_clip (MIT, originally OpenAI's CLIP).
- ``HfTokenizer``: open_clip's ``HFTokenizer`` on the ``tokenizers`` library, from the
  ``tokenizer.json`` the export saved (CLIPS has its own: ``clips.ClipsTokenizer``).
- ``preprocess_image``: Resize / CenterCrop(OrPad) / ToTensor / Normalize.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
from PIL import Image

from searchengine.models.textclean import clean_text


class TextTokenizer(Protocol):
    context_length: int

    def __call__(self, texts: Sequence[str]) -> np.ndarray: ...


# ------------------------------------------------------------- CLIP byte-level BPE


@lru_cache(maxsize=1)
def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1))
    bs += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


_NO_MERGE = 1 << 30  # ranks past every merge
_MERGES_USED = 49152 - 256 - 2  # the merges open_clip's tokenizer keeps (48 894)


def _first_merges(bpe_path: Path, count: int) -> list[str]:
    """The first ``count`` merges of a gzipped merges file, each as its line.

    Only a fifth of the file is used, so only that much is inflated, in one pass
    over raw bytes: reading it as lines through ``gzip.open`` cost three times as
    long (18 of a cold search's ms).
    """
    raw = bpe_path.read_bytes()
    inflate = zlib.decompressobj(wbits=31)  # a gzip header and trailer
    text = bytearray()
    lines = 0
    for start in range(0, len(raw), 1 << 16):
        chunk = inflate.decompress(raw[start : start + (1 << 16)])
        text += chunk
        lines += chunk.count(b"\n")
        if lines > count:
            break
    text += inflate.flush() if lines <= count else b""
    # Whole lines only (the last one may be cut mid-character), decoded at once.
    whole = bytes(text[: max(text.rfind(b"\n"), 0)]).decode("utf-8")
    return whole.split("\n", count + 1)[1 : count + 1]  # after the header line


class ClipBpeTokenizer:
    """open_clip's ``SimpleTokenizer``, returning numpy int64 ids.

    The vocabulary is the 512 byte characters (alone and word-final) followed by one
    token per merge, so a merged piece's id is 512 plus the rank of the merge that
    made it; only the merge ranks are kept (building the vocabulary's dict too cost
    ~15 ms of a cold search). Every id is checked against open_clip's at export.

    Args:
        bpe_path: the gzipped merges file (``bpe_simple_vocab_16e6.txt.gz``).
        context_length: tokens per text, padded with 0, truncated keeping the end token.
        clean: open_clip's cleaning mode (``lower``, ``whitespace``, ``canonicalize``).
    """

    def __init__(self, bpe_path: Path, context_length: int = 77, clean: str = "lower") -> None:
        import regex

        # A merge is kept as its line, "first second", not split into a pair:
        # splitting 48 894 lines cost more than everything else here.
        merges = _first_merges(bpe_path, _MERGES_USED)
        self.bpe_ranks = dict(zip(merges, itertools.count()))
        byte_chars = list(_bytes_to_unicode().values())
        self.char_ids = dict(zip(byte_chars + [c + "</w>" for c in byte_chars], itertools.count()))
        self.merged_base = len(self.char_ids)
        specials = ["<start_of_text>", "<end_of_text>"]
        self.sot, self.eot = (self.merged_base + len(merges) + i for i in range(2))
        self.cache: dict[str, list[int]] = {specials[0]: [self.sot], specials[1]: [self.eot]}
        self.pattern = regex.compile(
            "|".join(specials) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE,
        )
        self.context_length = context_length
        self.clean = clean
        self.byte_encoder = _bytes_to_unicode()

    def _bpe(self, token: str) -> list[int]:
        """The ids of one pre-token (its bytes as characters), merged by rank."""
        if token in self.cache:
            return self.cache[token]
        word: tuple[str, ...] = (*token[:-1], token[-1] + "</w>")
        made: dict[str, int] = {}  # the id of each piece a merge made
        ranks = self.bpe_ranks
        pairs = set(itertools.pairwise(word))
        while pairs:
            bigram = min(pairs, key=lambda pair: ranks.get(f"{pair[0]} {pair[1]}", _NO_MERGE))
            rank = ranks.get(f"{bigram[0]} {bigram[1]}")
            if rank is None:
                break
            first, second = bigram
            made[first + second] = self.merged_base + rank
            merged: list[str] = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    merged.extend(word[i:])
                    break
                merged.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
            if len(word) == 1:
                break
            pairs = set(itertools.pairwise(word))
        ids = [made[piece] if piece in made else self.char_ids[piece] for piece in word]
        self.cache[token] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for token in self.pattern.findall(clean_text(text, self.clean)):
            ids.extend(self._bpe("".join(self.byte_encoder[b] for b in token.encode("utf-8"))))
        return ids

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for row, text in enumerate(texts):
            tokens = [self.sot, *self.encode(text), self.eot]
            if len(tokens) > self.context_length:
                tokens = tokens[: self.context_length]
                tokens[-1] = self.eot
            out[row, : len(tokens)] = tokens
        return out


# ---------------------------------------------------------- Hugging Face tokenizers


class HfTokenizer:
    """open_clip's ``HFTokenizer`` on a fast tokenizer's ``tokenizer.json``.

    Args:
        path: the backend tokenizer saved by the export.
        settings: ``context_length``, ``clean``, ``strip_sep_token`` and the special ids
            ``pad``/``sep``. (CLIPS models never come here: ``clips.ClipsTokenizer``.)
    """

    def __init__(self, path: Path, settings: Mapping[str, Any]) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(path))
        self.tokenizer.no_padding()
        self.context_length = int(settings["context_length"])
        self.tokenizer.enable_truncation(max_length=self.context_length)
        self.clean = str(settings["clean"])
        self.strip_sep = bool(settings.get("strip_sep_token", False))
        self.pad = int(settings.get("pad") or 0)
        sep = settings.get("sep")
        self.sep = None if sep is None else int(sep)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        cleaned = [clean_text(t, self.clean) for t in texts]
        out = np.full((len(texts), self.context_length), self.pad, dtype=np.int64)
        for row, enc in enumerate(self.tokenizer.encode_batch(cleaned)):
            out[row, : len(enc.ids)] = enc.ids
        if self.strip_sep and self.sep is not None:
            out[out == self.sep] = 0
        return out


def load_tokenizer(folder: Path, settings: Mapping[str, Any]) -> TextTokenizer:
    """The tokenizer an export's manifest describes (``settings['kind']``)."""
    kind = settings["kind"]
    if kind == "clip_bpe":
        return ClipBpeTokenizer(
            folder / settings["file"], int(settings["context_length"]), str(settings["clean"])
        )
    if kind == "hf":
        return HfTokenizer(folder / settings["file"], settings)
    if kind == "clips":
        from searchengine.models.clips import ClipsTokenizer

        return ClipsTokenizer(
            folder / settings["file"], int(settings["context_length"]), str(settings["clean"])
        )
    raise ValueError(f"unknown tokenizer kind {kind!r}")


# ------------------------------------------------------------------ image transform


@dataclass(frozen=True)
class Preprocess:
    """open_clip's eval transform settings (``PreprocessCfg``)."""

    size: tuple[int, int]  # (height, width)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    fill_color: int = 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocess:
        size = data["size"]
        pair = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
        return cls(
            pair,
            _triple(data["mean"]),
            _triple(data["std"]),
            str(data.get("interpolation") or "bicubic"),
            str(data.get("resize_mode") or "shortest"),
            int(data.get("fill_color") or 0),
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _triple(value: Any) -> tuple[float, float, float]:
    values = [float(v) for v in value] if isinstance(value, (list, tuple)) else [float(value)] * 3
    return (values[0], values[1], values[2])


class ResizePlan(NamedTuple):
    """How open_clip's eval transform resizes one image, before its centre crop."""

    width: int
    height: int
    interpolation: str  # "bicubic" or "bilinear"
    fill: int | None  # crop (padding with this value) to ``cfg.size``; None: no crop


def resize_plan(width: int, height: int, cfg: Preprocess) -> ResizePlan:
    """The resize open_clip's transform applies to a ``width`` x ``height`` image.

    Shared by the Pillow path here and the tensor path of GPU ingest, so both size,
    resample and crop alike.
    """
    crop_h, crop_w = cfg.size
    interpolation = "bilinear" if cfg.interpolation == "bilinear" else "bicubic"
    if cfg.resize_mode == "squash":
        return ResizePlan(crop_w, crop_h, interpolation, None)
    if cfg.resize_mode == "longest":
        new_w, new_h = _keep_ratio(width, height, cfg.size, longest=True)
        return ResizePlan(new_w, new_h, interpolation, cfg.fill_color)
    if crop_h == crop_w:  # torchvision's Resize(int): the shorter side becomes the size
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(crop_h * long / short)
        new_w, new_h = (crop_h, new_long) if width <= height else (new_long, crop_h)
        return ResizePlan(new_w, new_h, interpolation, 0)
    # open_clip's ResizeKeepRatio(size) is always bicubic here.
    new_w, new_h = _keep_ratio(width, height, cfg.size, longest=False)
    return ResizePlan(new_w, new_h, "bicubic", 0)


def _keep_ratio(width: int, height: int, target: tuple[int, int], longest: bool) -> tuple[int, int]:
    ratio_h, ratio_w = height / target[0], width / target[1]
    ratio = max(ratio_h, ratio_w) if longest else min(ratio_h, ratio_w)
    return max(1, round(width / ratio)), max(1, round(height / ratio))


def preprocess_image(image: Image.Image, cfg: Preprocess) -> np.ndarray:
    """One image into the model's (3, H, W) float32 input, as open_clip's transform.

    PIL does the resampling, exactly as torchvision does for PIL images, so the
    result matches torchvision to float rounding.
    """
    if image.mode != "RGB":
        image = image.convert("RGB")
    plan = resize_plan(image.width, image.height, cfg)
    bilinear = plan.interpolation == "bilinear"
    resample = Image.Resampling.BILINEAR if bilinear else Image.Resampling.BICUBIC
    image = _resize(image, (plan.width, plan.height), resample)
    if plan.fill is not None:
        image = _crop_or_pad(image, cfg.size, plan.fill)
    # (x / 255 - mean) / std as one multiply-add per value, straight into (3, H, W).
    std = np.asarray(cfg.std, dtype=np.float32)
    scale = (1 / (255 * std)).astype(np.float32)[:, None, None]
    offset = (-np.asarray(cfg.mean, dtype=np.float32) / std)[:, None, None]
    channels = np.asarray(image).transpose(2, 0, 1)
    pixels = np.empty(channels.shape, dtype=np.float32)
    np.multiply(channels, scale, out=pixels)
    pixels += offset
    return pixels


def _resize(image: Image.Image, size: tuple[int, int], resample: Any) -> Image.Image:
    return image if image.size == size else image.resize(size, resample)


def _crop_or_pad(image: Image.Image, size: tuple[int, int], fill: int) -> Image.Image:
    crop_h, crop_w = size
    w, h = image.size
    if crop_w > w or crop_h > h:
        canvas = Image.new(image.mode, (max(w, crop_w), max(h, crop_h)), (fill,) * 3)
        left = (crop_w - w) // 2 if crop_w > w else 0
        top = (crop_h - h) // 2 if crop_h > h else 0
        canvas.paste(image, (left, top))
        image = canvas
        w, h = image.size
    if (w, h) == (crop_w, crop_h):
        return image
    top = round((h - crop_h) / 2.0)
    left = round((w - crop_w) / 2.0)
    return image.crop((left, top, left + crop_w, top + crop_h))
