"""A fake Hugging Face hub cache: tiny random-weight repos in the hub client's on-disk format.

Nothing here can reach the network, and this machine and CI cannot either. So the real
loading code (open_clip ``hf-hub:`` and builtin tags, transformers ``from_pretrained``) is
exercised against a cache that looks exactly like one the hub client wrote after a
download::

    $HF_HOME/hub/models--ORG--NAME/
        blobs/<etag>                        file contents
        snapshots/<commit>/<file> -> ../../blobs/<etag>
        refs/main                           <commit>, 40 hex digits

With ``HF_HOME`` pointing at it and ``HF_HUB_OFFLINE=1``, the hub client resolves
``refs/main`` and returns the snapshot path, the same code path as on a user's machine.

Each repo is made by one *builder*: a function returning a :class:`RepoSpec` (repo id and
file contents). :func:`build_fake_hub` writes the default, tiny ones; add a builder to
``DEFAULT_BUILDERS`` to add a repo (BLIP, CLIPSeg, ...). The full-size open_clip builtin
checkpoint (~150M parameters) is written only on request, by :func:`build_openclip_builtin`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import pytest
    import torch

__all__ = [
    "BLIP",
    "BLIP_CAPTION_REPO_ID",
    "BLIP_VQA_REPO_ID",
    "CLIPS",
    "CLIPS_REPO_ID",
    "DEFAULT_BUILDERS",
    "HF_CLIP",
    "HF_CLIP_REPO_ID",
    "CachedRepo",
    "FakeHub",
    "RepoSpec",
    "activate",
    "blip_caption_repo",
    "blip_vqa_repo",
    "build_fake_hub",
    "build_openclip_builtin",
    "clips_repo",
    "hf_clip_repo",
    "hub_cache_dir",
    "offline_env",
    "openclip_builtin_repo",
    "write_cached_repo",
]

WeightFormat = Literal["safetensors", "bin"]

# Files the hub stores in git LFS (default .gitattributes of a new model repo). The hub
# client names a blob after the file's etag: for LFS files the sha256 of the content, for
# plain git files the git blob sha1. Nothing reads the names back (a cached blob is never
# re-hashed), but matching them keeps the cache identical to a downloaded one.
_LFS_SUFFIXES = (".bin", ".safetensors", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx")


# --------------------------------------------------------------------------- cache layout


@dataclass(frozen=True)
class RepoSpec:
    """What a builder produces: a hub repo id and the files a download would have fetched.

    Attributes:
        repo_id: ``ORG/NAME`` as on the hub.
        files: file name (may contain ``/`` for subfolders) to content.
        absent: files loaders ask for that the repo does not have. Online, the hub answers
            404 and the client records that under ``.no_exist/<commit>/``; offline loads
            rely on those records (transformers 5 probes ``config.json`` even to load a
            tokenizer, and fails offline when the cache cannot say it does not exist).
    """

    repo_id: str
    files: Mapping[str, bytes]
    absent: tuple[str, ...] = ()


@dataclass(frozen=True)
class CachedRepo:
    """A repo written into a hub cache.

    Attributes:
        repo_id: ``ORG/NAME``.
        commit: the 40-hex commit id ``refs/main`` points at.
        snapshot: ``.../snapshots/<commit>``, the folder loaders end up reading.
        files: names of the files present in the snapshot.
    """

    repo_id: str
    commit: str
    snapshot: Path
    files: tuple[str, ...]


def hub_cache_dir(hf_home: Path) -> Path:
    """The hub cache folder the hub client uses for a given ``HF_HOME``."""
    return hf_home / "hub"


def _etag(name: str, data: bytes) -> str:
    if name.endswith(_LFS_SUFFIXES):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def write_cached_repo(hub_cache: Path, spec: RepoSpec) -> CachedRepo:
    """Write one repo into a hub cache, as ``hf_hub_download`` would have left it.

    Writing the same content twice is a no-op; writing new content for an existing repo
    adds a snapshot and moves ``refs/main``, like a download after the repo changed.

    Args:
        hub_cache: the hub cache folder (``$HF_HOME/hub``).
        spec: repo id and files.

    Returns:
        Where the repo landed.
    """
    org_name = spec.repo_id.split("/")
    if len(org_name) != 2 or not all(org_name):
        raise ValueError(f"repo id must be ORG/NAME, got {spec.repo_id!r}")
    both = set(spec.absent) & set(spec.files)
    if both:
        raise ValueError(f"{sorted(both)} both present and absent in {spec.repo_id}")
    repo_dir = hub_cache / ("models--" + "--".join(org_name))
    blobs = repo_dir / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)

    etags = {name: _etag(name, data) for name, data in sorted(spec.files.items())}
    # A stable commit id derived from the content: same files, same snapshot.
    manifest = "\n".join(f"{name} {tag}" for name, tag in etags.items()).encode()
    commit = hashlib.sha1(spec.repo_id.encode() + b"\n" + manifest).hexdigest()
    snapshot = repo_dir / "snapshots" / commit

    for name, data in spec.files.items():
        blob = blobs / etags[name]
        if not blob.exists():
            _atomic_write(blob, data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(os.path.relpath(blob, link.parent))

    for name in spec.absent:
        marker = repo_dir / ".no_exist" / commit / name
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()

    refs = repo_dir / "refs"
    refs.mkdir(exist_ok=True)
    (refs / "main").write_text(commit)  # no trailing newline, as the hub client writes it
    return CachedRepo(spec.repo_id, commit, snapshot, tuple(sorted(spec.files)))


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".incomplete-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------ the hub


@dataclass(frozen=True)
class FakeHub:
    """A fake ``HF_HOME`` and the repos cached in it.

    Attributes:
        hf_home: the folder to use as ``HF_HOME``.
        repos: repo id to where it was written.
    """

    hf_home: Path
    repos: Mapping[str, CachedRepo] = field(default_factory=dict)

    @property
    def hub_cache(self) -> Path:
        """``$HF_HOME/hub``."""
        return hub_cache_dir(self.hf_home)

    def env(self) -> dict[str, str]:
        """The variables that point a fresh process at this cache, offline."""
        return offline_env(self.hf_home)


def offline_env(hf_home: Path) -> dict[str, str]:
    """Environment variables that make hub clients read ``hf_home`` and never go online.

    ``HF_HUB_CACHE`` and ``HF_ASSETS_CACHE`` are set as well as ``HF_HOME``: a developer's
    own values of those would otherwise win over ``HF_HOME``.
    """
    return {
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hub_cache_dir(hf_home)),
        "HF_ASSETS_CACHE": str(hf_home / "assets"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }


def activate(monkeypatch: pytest.MonkeyPatch, hf_home: Path) -> None:
    """Point this process at the cache under ``hf_home``, offline, until ``monkeypatch`` undoes it.

    ``huggingface_hub.constants`` copies ``HF_HOME``, ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE``
    from the environment when first imported, so once anything has imported the hub client,
    changing ``os.environ`` no longer redirects it. transformers and open_clip both go
    through that module at call time (``constants.HF_HUB_CACHE`` as the default cache dir,
    ``constants.is_offline_mode()`` reading ``HF_HUB_OFFLINE``), so patching those module
    attributes is enough; the environment is set too, for anything imported later and
    for child processes. The module is imported here so that ``monkeypatch`` restores
    values read from the real environment, whatever the test imports.
    """
    import huggingface_hub.constants as constants

    for name, value in offline_env(hf_home).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(constants, "HF_HOME", str(hf_home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache_dir(hf_home)))
    monkeypatch.setattr(constants, "HF_ASSETS_CACHE", str(hf_home / "assets"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


RepoBuilder = Callable[[], RepoSpec]


def build_fake_hub(hf_home: Path, builders: Sequence[RepoBuilder] | None = None) -> FakeHub:
    """Write the fake hub cache under ``hf_home``.

    Args:
        hf_home: folder to use as ``HF_HOME``; created if missing.
        builders: repo builders to run; ``DEFAULT_BUILDERS`` (all tiny) when None.

    Returns:
        The hub, with every repo written.
    """
    hub_cache = hub_cache_dir(hf_home)
    hub_cache.mkdir(parents=True, exist_ok=True)
    repos: dict[str, CachedRepo] = {}
    for build in DEFAULT_BUILDERS if builders is None else builders:
        cached = write_cached_repo(hub_cache, build())
        repos[cached.repo_id] = cached
    return FakeHub(hf_home, repos)


# ------------------------------------------------------------------------ shared helpers


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Deterministic weight init that leaves the caller's RNG state untouched."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _json(obj: object) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode()


def _weights(state_dict: Mapping[str, torch.Tensor], fmt: WeightFormat) -> bytes:
    import torch

    tensors = {k: v.detach().contiguous() for k, v in state_dict.items()}
    if fmt == "safetensors":
        from safetensors.torch import save

        return save(tensors)
    buf = io.BytesIO()
    torch.save(tensors, buf)
    return buf.getvalue()


def _read_dir(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


# Words the tiny vocabularies know whole, so test captions tokenize into few pieces.
_WORDS = (
    "a",
    "an",
    "the",
    "of",
    "in",
    "on",
    "with",
    "and",
    "photo",
    "picture",
    "image",
    "dog",
    "cat",
    "red",
    "green",
    "blue",
    "yellow",
    "circle",
    "square",
    "triangle",
    "small",
    "large",
    "left",
    "right",
    "top",
    "bottom",
    "kids",
    "building",
    "sandcastle",
    "beach",
)


# --------------------------------------------------------- open_clip hf-hub: repo (CLIPS)


@dataclass(frozen=True)
class _ClipsShape:
    repo_id: str = "UCSC-VLAA/ViT-L-14-CLIPS-Recap-DataComp-1B"
    embed_dim: int = 48
    image_size: int = 336
    patch_size: int = 14
    context_length: int = 80
    vocab_size: int = 512  # > tokenizer vocab, as the real 32000 > bert-base-uncased's 30522


CLIPS = _ClipsShape()
CLIPS_REPO_ID = CLIPS.repo_id


def _bert_vocab() -> list[str]:
    """A WordPiece vocabulary laid out like bert-base-uncased's, only much shorter.

    Ids 0..103 match bert-base-uncased ([PAD]=0, [unused0]=1, [unused1]=2, [UNK]=100,
    [CLS]=101, [SEP]=102, [MASK]=103): open_clip's CLIPS tokenizer notes name bos=1,
    eos=2, cls=101, pad=0.
    """
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = [chr(c) for c in range(33, 127) if not chr(c).isupper()]
    vocab += chars
    vocab += ["##" + c for c in chars if c.isalnum()]
    vocab += [w for w in _WORDS if w not in vocab]
    return vocab


def _bert_tokenizer_files(vocab: list[str], model_max_length: int) -> dict[str, bytes]:
    """vocab.txt, tokenizer.json, tokenizer_config.json, special_tokens_map.json.

    The layout of a BERT tokenizer saved by transformers 4.x, which is what hub repos hold.
    """
    from tokenizers.implementations import BertWordPieceTokenizer

    tok = BertWordPieceTokenizer({t: i for i, t in enumerate(vocab)}, lowercase=True)
    specials = {
        "bos_token": "[unused0]",
        "eos_token": "[unused1]",
        "unk_token": "[UNK]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
    }
    tok.add_special_tokens([specials["bos_token"], specials["eos_token"]])
    tokenizer_config = {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": True,
        "tokenize_chinese_chars": True,
        "strip_accents": None,
        "clean_up_tokenization_spaces": True,
        "model_max_length": model_max_length,
        **specials,
    }
    return {
        "vocab.txt": ("\n".join(vocab) + "\n").encode(),
        "tokenizer.json": tok.to_str(pretty=True).encode(),
        "tokenizer_config.json": _json(tokenizer_config),
        "special_tokens_map.json": _json(specials),
    }


def clips_repo(weights: Sequence[WeightFormat] = ("safetensors",)) -> RepoSpec:
    """The CLIPS reranker as an open_clip ``hf-hub:`` repo, tiny and random.

    Same config shape as the real repo (ViT-L-14-CLIPA-336 layout: avg-pooled vision tower
    without ln_pre, final LN after pooling; bidirectional text tower pooled on its last
    token; BERT tokenizer in ``clips`` mode, 80 tokens; ImageNet mean/std), with widths and
    depths cut to about 300k parameters. The tokenizer lives in the repo itself.

    Args:
        weights: which weight files to write. open_clip reads
            ``open_clip_model.safetensors`` first, then ``open_clip_pytorch_model.bin``.
    """
    vocab = _bert_vocab()
    assert len(vocab) <= CLIPS.vocab_size
    model_cfg = {
        "embed_dim": CLIPS.embed_dim,
        "vision_cfg": {
            "image_size": CLIPS.image_size,
            "layers": 2,
            "width": 64,
            "head_width": 32,
            "patch_size": CLIPS.patch_size,
            "no_ln_pre": True,
            "pool_type": "avg",
            "final_ln_after_pool": True,
        },
        "text_cfg": {
            "context_length": CLIPS.context_length,
            "vocab_size": CLIPS.vocab_size,
            "hf_tokenizer_name": CLIPS.repo_id,
            "tokenizer_mode": "clips",
            "width": 64,
            "heads": 2,
            "layers": 2,
            "pool_type": "last",
            "no_causal_mask": True,
        },
    }
    preprocess_cfg = {
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        # open_clip's CLIPA defaults (same authors, same training code)
        "interpolation": "bilinear",
        "resize_mode": "squash",
    }
    with _seeded(1):
        model = _openclip_from_cfg(model_cfg)
    files = {
        "open_clip_config.json": _json({"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}),
        **_bert_tokenizer_files(vocab, CLIPS.context_length),
    }
    state = model.state_dict()
    if "safetensors" in weights:
        files["open_clip_model.safetensors"] = _weights(state, "safetensors")
    if "bin" in weights:
        files["open_clip_pytorch_model.bin"] = _weights(state, "bin")
    return RepoSpec(CLIPS.repo_id, files, absent=("config.json",))


def _openclip_from_cfg(model_cfg: Mapping[str, object]) -> torch.nn.Module:
    """Instantiate an open_clip model from a config dict, as ``create_model`` would."""
    from open_clip.model import CLIP

    cfg = json.loads(json.dumps(model_cfg))  # deep copy; open_clip mutates configs
    return CLIP(**cfg)


# ------------------------------------------------- transformers CLIPModel repo (hf: spec)


@dataclass(frozen=True)
class _HfClipShape:
    repo_id: str = "openai/clip-vit-base-patch32"
    projection_dim: int = 32
    image_size: int = 224
    patch_size: int = 32
    max_length: int = 77


HF_CLIP = _HfClipShape()
HF_CLIP_REPO_ID = HF_CLIP.repo_id

_OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
_OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte-level alphabet: each byte as a printable unicode character."""
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


def _clip_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE in CLIP's layout: 256 bytes, 256 bytes + ``</w>``, merges, specials.

    Merges spell out each of ``_WORDS`` left to right, so those words are single tokens;
    anything else falls back to bytes. The two specials come last, as in CLIP, so the
    end-of-text token has the highest id (the legacy ``eos_token_id: 2`` config pools on
    the argmax id, see ``hf_clip_repo``).
    """
    alphabet = list(_bytes_to_unicode().values())
    vocab_list = alphabet + [c + "</w>" for c in alphabet]
    merges: list[tuple[str, str]] = []
    for word in _WORDS:
        pieces = [*word[:-1], word[-1] + "</w>"]
        left = pieces[0]
        for right in pieces[1:]:
            merge = (left, right)
            left += right
            if merge not in merges:
                merges.append(merge)
                vocab_list.append(left)
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(vocab_list)}, merges


def _clip_tokenizer_files(max_length: int) -> dict[str, bytes]:
    """vocab.json, merges.txt, tokenizer.json, tokenizer_config.json, special_tokens_map.json."""
    from transformers import CLIPTokenizer

    vocab, merges = _clip_bpe()
    # Annotated as list[str], but the tokenizers BPE model takes (left, right) pairs.
    tok = CLIPTokenizer(vocab=vocab, merges=merges)  # type: ignore[arg-type]
    specials = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
    }
    tokenizer_config = {
        "tokenizer_class": "CLIPTokenizer",
        "do_lower_case": True,
        "errors": "replace",
        "add_prefix_space": False,
        "model_max_length": max_length,
        **specials,
    }
    return {
        "vocab.json": _json(vocab),
        "merges.txt": ("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)).encode(),
        "tokenizer.json": tok.backend_tokenizer.to_str(pretty=True).encode(),
        "tokenizer_config.json": _json(tokenizer_config),
        "special_tokens_map.json": _json(specials),
    }


def hf_clip_repo() -> RepoSpec:
    """``openai/clip-vit-base-patch32`` as a transformers repo, tiny and random.

    Real layout: ``config.json`` + ``model.safetensors`` (saved by ``CLIPModel``),
    ``preprocessor_config.json`` in the legacy feature-extractor form the real repo
    still serves, and CLIP's byte-level BPE tokenizer files.
    """
    from transformers import CLIPConfig, CLIPModel

    vocab, _ = _clip_bpe()
    config = CLIPConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": HF_CLIP.max_length,
            # As in the real config.json: eos_token_id 2 selects the legacy pooling on the
            # highest token id, which is <|endoftext|> in CLIP vocabularies.
            "bos_token_id": 0,
            "eos_token_id": 2,
            "pad_token_id": 1,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": HF_CLIP.image_size,
            "patch_size": HF_CLIP.patch_size,
        },
        projection_dim=HF_CLIP.projection_dim,
    )
    with _seeded(2):
        model = CLIPModel(config)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        files = _read_dir(Path(tmp))
    files["preprocessor_config.json"] = _json(
        {
            "crop_size": HF_CLIP.image_size,
            "do_center_crop": True,
            "do_normalize": True,
            "do_resize": True,
            "feature_extractor_type": "CLIPFeatureExtractor",
            "image_mean": _OPENAI_MEAN,
            "image_std": _OPENAI_STD,
            "resample": 3,
            "size": HF_CLIP.image_size,
        }
    )
    files.update(_clip_tokenizer_files(HF_CLIP.max_length))
    return RepoSpec(HF_CLIP.repo_id, files)


# ----------------------------------------- transformers BLIP repos (captioning and VQA)


@dataclass(frozen=True)
class _BlipShape:
    caption_repo_id: str = "Salesforce/blip-image-captioning-base"
    vqa_repo_id: str = "Salesforce/blip-vqa-base"
    image_size: int = 384  # what the real processors resize to
    # The real models use 16; 32 keeps beam search over the image tokens fast on a CPU.
    patch_size: int = 32


BLIP = _BlipShape()
BLIP_CAPTION_REPO_ID = BLIP.caption_repo_id
BLIP_VQA_REPO_ID = BLIP.vqa_repo_id


def _blip_tokenizer_files(vocab: list[str]) -> dict[str, bytes]:
    """BLIP's tokenizer: bert-base-uncased plus ``[DEC]`` (bos, decoder start) and ``[ENC]``.

    As in the real repos, the two extra tokens come right after the WordPiece vocabulary
    (30522 and 30523 there), so the text config's ``bos_token_id`` is ``len(vocab)``.
    """
    from tokenizers.implementations import BertWordPieceTokenizer

    tok = BertWordPieceTokenizer({t: i for i, t in enumerate(vocab)}, lowercase=True)
    tok.add_special_tokens(["[DEC]", "[ENC]"])
    specials = {
        "bos_token": "[DEC]",
        "additional_special_tokens": ["[ENC]"],
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
        "pad_token": "[PAD]",
        "sep_token": "[SEP]",
        "unk_token": "[UNK]",
    }
    tokenizer_config = {
        "tokenizer_class": "BertTokenizer",
        "processor_class": "BlipProcessor",
        "do_lower_case": True,
        "do_basic_tokenize": True,
        "tokenize_chinese_chars": True,
        "strip_accents": None,
        "model_max_length": 512,
        **specials,
    }
    return {
        "vocab.txt": ("\n".join(vocab) + "\n").encode(),
        "tokenizer.json": tok.to_str(pretty=True).encode(),
        "tokenizer_config.json": _json(tokenizer_config),
        "special_tokens_map.json": _json(specials),
    }


def _blip_repo(repo_id: str, model_class: str, seed: int) -> RepoSpec:
    """A BLIP repo as transformers saves it, with the real processor and token layout.

    Weights are drawn wider than transformers' defaults (std 0.2, not 0.02 for the text
    side and 1e-10 for the vision side): at the default scale the image barely moves the
    decoder, and every image would get the same random caption.
    """
    import transformers
    from transformers import BlipConfig

    vocab = _bert_vocab()
    init = 0.2
    config = BlipConfig(
        text_config={
            "vocab_size": len(vocab) + 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 64,
            "bos_token_id": len(vocab),  # [DEC]
            "sep_token_id": 102,  # [SEP] ends a generated text
            "pad_token_id": 0,
            "eos_token_id": 2,  # as in the real config; generation stops on sep_token_id
            "initializer_range": init,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": BLIP.image_size,
            "patch_size": BLIP.patch_size,
            "initializer_range": init,
        },
        projection_dim=32,
        image_text_hidden_size=32,
        initializer_range=init,
    )
    with _seeded(seed):
        model = getattr(transformers, model_class)(config)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        files = _read_dir(Path(tmp))
    files["preprocessor_config.json"] = _json(
        {
            "do_normalize": True,
            "do_rescale": True,
            "do_resize": True,
            "image_mean": _OPENAI_MEAN,
            "image_processor_type": "BlipImageProcessor",
            "image_std": _OPENAI_STD,
            "processor_class": "BlipProcessor",
            "resample": 3,
            "rescale_factor": 1 / 255,
            "size": {"height": BLIP.image_size, "width": BLIP.image_size},
        }
    )
    files.update(_blip_tokenizer_files(vocab))
    return RepoSpec(repo_id, files)


def blip_caption_repo() -> RepoSpec:
    """``Salesforce/blip-image-captioning-base``: ``BlipForConditionalGeneration``, tiny, random."""
    return _blip_repo(BLIP.caption_repo_id, "BlipForConditionalGeneration", seed=4)


def blip_vqa_repo() -> RepoSpec:
    """``Salesforce/blip-vqa-base``: ``BlipForQuestionAnswering``, tiny, random."""
    return _blip_repo(BLIP.vqa_repo_id, "BlipForQuestionAnswering", seed=5)


# --------------------------------------------------- open_clip builtin tags (ViT-B-32:openai)


def openclip_builtin_repo(
    arch: str = "ViT-B-32", tag: str = "openai", fp16: bool = True
) -> RepoSpec:
    """The hub repo open_clip downloads for ``create_model_and_transforms(arch, pretrained=tag)``.

    open_clip maps builtin tags to hub repos in ``open_clip.pretrained`` (``ViT-B-32`` +
    ``openai`` is ``timm/vit_base_patch32_clip_224.openai/``, no file name, meaning
    ``open_clip_pytorch_model.bin``, for which it asks for ``open_clip_model.safetensors``
    first). The weights are the real architecture at full size with random values.

    Args:
        arch: open_clip builtin architecture name.
        tag: pretrained tag of that architecture.
        fp16: store half-precision weights (half the bytes; open_clip casts on load).
    """
    import open_clip
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    cfg = open_clip.get_pretrained_cfg(arch, tag)
    hf_hub = cfg.get("hf_hub", "")
    if not hf_hub:
        raise ValueError(f"open_clip has no hub repo for {arch}:{tag} (config: {cfg})")
    # Same split as open_clip.pretrained.download_pretrained: "org/name/" or "org/name/file".
    repo_id, filename = os.path.split(hf_hub)
    # open_clip asks for the safetensors sibling of a .bin/.pth first (_get_safe_alternatives).
    if not filename or filename == HF_WEIGHTS_NAME:
        filename = HF_SAFE_WEIGHTS_NAME
    elif filename.endswith((".bin", ".pth")):
        filename = filename[:-4] + ".safetensors"
    else:
        raise ValueError(f"{arch}:{tag} is stored as {filename}; only torch weights are faked")
    with _seeded(3):
        model = open_clip.create_model(
            arch, pretrained=None, force_quick_gelu=bool(cfg.get("quick_gelu", False))
        )
    state = model.state_dict()
    if fp16:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    return RepoSpec(repo_id, {filename: _weights(state, "safetensors")})


def build_openclip_builtin(
    hf_home: Path, arch: str = "ViT-B-32", tag: str = "openai"
) -> CachedRepo:
    """Add the full-size builtin checkpoint for ``arch:tag`` to the cache under ``hf_home``.

    Slow (seconds) and large (~300 MB for ViT-B-32 in fp16), hence not in
    ``DEFAULT_BUILDERS``.
    """
    return write_cached_repo(hub_cache_dir(hf_home), openclip_builtin_repo(arch, tag))


DEFAULT_BUILDERS: tuple[RepoBuilder, ...] = (
    clips_repo,
    hf_clip_repo,
    blip_caption_repo,
    blip_vqa_repo,
)


# ============================================================================== CLIPSeg
# One block, kept at the end of the file: the referring-segmentation repo that
# ``searchengine where`` loads by default. Sources for each fact are named inline.


@dataclass(frozen=True)
class _ClipSegShape:
    repo_id: str = "CIDAS/clipseg-rd64-refined"
    # preprocessor_config.json "size": transformers' conversion script builds the processor
    # with ViTFeatureExtractor(size=352) (convert_clipseg_original_pytorch_to_hf.py).
    processor_size: int = 352
    # config.json vision_config: CLIPSegVisionConfig(patch_size=16) with the default
    # image_size 224 (same script); the model interpolates its 14x14 position table to the
    # 22x22 grid of a 352-pixel input (CLIPSegForImageSegmentation.forward,
    # interpolate_pos_encoding=True by default).
    vision_image_size: int = 224
    patch_size: int = 16
    # "refined" = use_complex_transposed_convolution (same script: True if "refined" in
    # the model name); "rd64" = reduce_dim 64 (the real value; kept, it is small).
    reduce_dim: int = 64
    extract_layers: tuple[int, ...] = (1, 2, 3)  # the real (3, 6, 9) of 12 layers, scaled to 4
    max_length: int = 77  # CLIP's context, tokenizer_config.json model_max_length


CLIPSEG = _ClipSegShape()
CLIPSEG_REPO_ID = CLIPSEG.repo_id

# ImageNet mean/std, not CLIP's: the original CLIPSeg normalises with torchvision's
# ImageNet statistics and the hub processor config carries them (public ports of this
# repo, e.g. ONNX re-implementations, call out "ImageNet mean/std, NOT CLIP stats").
_IMAGENET_MEAN = [0.485, 0.456, 0.406]
_IMAGENET_STD = [0.229, 0.224, 0.225]


def _clipseg_tokenizer_files() -> dict[str, bytes]:
    """CLIP's slow-tokenizer files only: vocab.json, merges.txt, configs; no tokenizer.json.

    The repo was converted in 2022 with ``CLIPTokenizer.from_pretrained(
    "openai/clip-vit-base-patch32")`` (the conversion script) and saved by
    ``processor.save_pretrained``; its file list has vocab.json and merges.txt but no
    tokenizer.json, so transformers builds the fast tokenizer from the BPE files.
    """
    vocab, merges = _clip_bpe()
    specials = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
    }
    tokenizer_config = {
        "tokenizer_class": "CLIPTokenizer",
        "processor_class": "CLIPSegProcessor",
        "do_lower_case": True,
        "errors": "replace",
        "add_prefix_space": False,
        "model_max_length": CLIPSEG.max_length,
        "name_or_path": "openai/clip-vit-base-patch32",
        **specials,
    }
    return {
        "vocab.json": _json(vocab),
        "merges.txt": ("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)).encode(),
        "tokenizer_config.json": _json(tokenizer_config),
        "special_tokens_map.json": _json(specials),
    }


def clipseg_repo() -> RepoSpec:
    """``CIDAS/clipseg-rd64-refined`` as a transformers repo, tiny and random.

    Real layout (hub file list: config.json, preprocessor_config.json, pytorch_model.bin,
    vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json; no
    tokenizer.json): a ``CLIPSegForImageSegmentation`` with the refined decoder head,
    ViT-B/16-shaped vision tower cut to 4 narrow layers, and the legacy text ids of
    2022 conversions (bos 0, eos 2, pad 1: pooling on the highest token id).
    """
    import torch
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation

    vocab, _ = _clip_bpe()
    config = CLIPSegConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": CLIPSEG.max_length,
            "bos_token_id": 0,
            "eos_token_id": 2,
            "pad_token_id": 1,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 4,
            "num_attention_heads": 2,
            "image_size": CLIPSEG.vision_image_size,
            "patch_size": CLIPSEG.patch_size,
        },
        projection_dim=32,
        extract_layers=list(CLIPSEG.extract_layers),
        reduce_dim=CLIPSEG.reduce_dim,
        decoder_num_attention_heads=4,
        decoder_intermediate_size=128,
        use_complex_transposed_convolution=True,
    )
    config.architectures = ["CLIPSegForImageSegmentation"]
    with _seeded(6):
        model = CLIPSegForImageSegmentation(config)
    record = config.to_dict()
    record["torch_dtype"] = "float32"  # what 2022 conversions wrote (later: "dtype")
    files = {
        "config.json": _json(record),
        "pytorch_model.bin": _weights(model.state_dict(), "bin"),
        "preprocessor_config.json": _json(
            {
                "do_normalize": True,
                "do_rescale": True,
                "do_resize": True,
                "feature_extractor_type": "ViTFeatureExtractor",
                "image_mean": _IMAGENET_MEAN,
                "image_processor_type": "ViTImageProcessor",
                "image_std": _IMAGENET_STD,
                "processor_class": "CLIPSegProcessor",
                "resample": 2,  # PIL bilinear, ViTImageProcessor's default
                "rescale_factor": 1 / 255,
                "size": {"height": CLIPSEG.processor_size, "width": CLIPSEG.processor_size},
            }
        ),
    }
    files.update(_clipseg_tokenizer_files())
    del torch
    return RepoSpec(CLIPSEG.repo_id, files)


DEFAULT_BUILDERS = (*DEFAULT_BUILDERS, clipseg_repo)
__all__ += ["CLIPSEG", "CLIPSEG_REPO_ID", "clipseg_repo"]
