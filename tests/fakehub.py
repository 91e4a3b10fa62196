"""A fake Hugging Face hub: tiny random-weight repos laid out as the public repos are.

Nothing here reaches the internet, and this machine and CI cannot either. So the real loading
code (open_clip ``hf-hub:`` and builtin tags, transformers ``from_pretrained``, our own tokenizer
downloads) runs against repos rebuilt from what the public repos contain: the same file names,
the same config keys, the same weight format, with tiny shapes and random values. Each builder
below says, next to each fact, where it was read (hub commit pages and file listings, open_clip's
and the CLIPS authors' code). Facts that no public source confirmed are marked UNVERIFIED.

Caches are filled the way users fill them, by the installed ``huggingface_hub`` itself, from a
local hub (``tests/localhub.py``) serving these repos on 127.0.0.1:

- :func:`build_fake_hub` downloads every repo as ``hf download REPO`` does
  (``snapshot_download``): all files, and no ``.no_exist`` record of files the repo lacks;
- tests fill a cache as a first online run does by loading with :func:`go_online`;
- :func:`copy_hf_home` copies a filled cache as a user copies one to another machine.

With ``HF_HOME`` pointing at a cache and ``HF_HUB_OFFLINE=1`` (:func:`activate`), loaders take
the same code path as on a user's machine without a network::

    $HF_HOME/hub/models--ORG--NAME/
        blobs/<etag>                        file contents
        snapshots/<commit>/<file> -> ../../blobs/<etag>
        refs/main                           <commit>, 40 hex digits

The full-size open_clip builtin checkpoint (~150M parameters) is written only on request, by
:func:`build_openclip_builtin`.

Files of the public repos that no loader of searchengine reads are not rebuilt (other
frameworks' weights: ``tf_model.h5``, ``flax_model.msgpack``, ``rust_model.ot``, ``model.onnx``,
``coreml/``); each builder lists what it leaves out. A download never asks for them, so
leaving them out changes no code path.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from localhub import LocalHub, commit_id, etag

if TYPE_CHECKING:
    import pytest
    import torch

__all__ = [
    "BERT_REPO_ID",
    "BLIP",
    "BLIP_CAPTION_REPO_ID",
    "BLIP_VQA_REPO_ID",
    "CLIPS",
    "CLIPS_H14_REPO_ID",
    "CLIPS_LAYOUTS",
    "CLIPS_REPO_ID",
    "DEFAULT_BUILDERS",
    "HF_CLIP",
    "HF_CLIP_REPO_ID",
    "CachedRepo",
    "ClipsLayout",
    "FakeHub",
    "RepoSpec",
    "activate",
    "bert_base_uncased_repo",
    "blip_caption_repo",
    "blip_vqa_repo",
    "build_fake_hub",
    "build_openclip_builtin",
    "clips_h14_repo",
    "clips_reference_ids",
    "clips_repo",
    "clips_vocab",
    "copy_hf_home",
    "download_like_cli",
    "go_online",
    "hf_clip_repo",
    "hub_cache_dir",
    "offline_env",
    "openclip_builtin_repo",
    "write_cached_repo",
]

WeightFormat = Literal["safetensors", "bin"]


# --------------------------------------------------------------------------- cache layout


@dataclass(frozen=True)
class RepoSpec:
    """What a builder produces: a hub repo id and the files the repo holds.

    Attributes:
        repo_id: ``ORG/NAME`` as on the hub, or a bare ``NAME`` for the hub's oldest repos
            (``bert-base-uncased``).
        files: file name (may contain ``/`` for subfolders) to content.
        absent: for :func:`write_cached_repo` only: files to record as missing under
            ``.no_exist/<commit>/``, as the hub client does after asking for them online.
    """

    repo_id: str
    files: Mapping[str, bytes]
    absent: tuple[str, ...] = ()


@dataclass(frozen=True)
class CachedRepo:
    """A repo in a hub cache.

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


def repo_folder(hub_cache: Path, repo_id: str) -> Path:
    """``models--ORG--NAME``, the hub client's folder for a model repo."""
    return hub_cache / ("models--" + repo_id.replace("/", "--"))


def _check_repo_id(repo_id: str) -> None:
    parts = repo_id.split("/")
    if len(parts) > 2 or not all(parts):
        raise ValueError(f"repo id must be ORG/NAME or NAME, got {repo_id!r}")


def write_cached_repo(hub_cache: Path, spec: RepoSpec) -> CachedRepo:
    """Write one repo straight into a hub cache, in the hub client's layout.

    For caches whose exact history does not matter (unit tests, the 300 MB builtin
    checkpoint); :func:`download_like_cli` fills a cache with the real client instead.
    Writing the same content twice is a no-op; new content adds a snapshot and moves
    ``refs/main``, like a download after the repo changed.
    """
    _check_repo_id(spec.repo_id)
    both = set(spec.absent) & set(spec.files)
    if both:
        raise ValueError(f"{sorted(both)} both present and absent in {spec.repo_id}")
    repo_dir = repo_folder(hub_cache, spec.repo_id)
    blobs = repo_dir / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    commit = commit_id(spec)
    snapshot = repo_dir / "snapshots" / commit
    for name, data in spec.files.items():
        blob = blobs / etag(name, data)
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


def cached_repo(hub_cache: Path, repo_id: str) -> CachedRepo:
    """What the cache under ``hub_cache`` holds of ``repo_id`` now (``refs/main``'s snapshot)."""
    repo_dir = repo_folder(hub_cache, repo_id)
    commit = (repo_dir / "refs" / "main").read_text().strip()
    snapshot = repo_dir / "snapshots" / commit
    files = sorted(
        p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if not p.is_dir()
    )
    return CachedRepo(repo_id, commit, snapshot, tuple(files))


# ------------------------------------------------------------------------------ the hub


@dataclass(frozen=True)
class FakeHub:
    """A fake ``HF_HOME`` and the repos cached in it.

    Attributes:
        hf_home: the folder to use as ``HF_HOME``.
        repos: repo id to where it was written.
        specs: repo id to the repo as the (local) hub serves it.
    """

    hf_home: Path
    repos: Mapping[str, CachedRepo] = field(default_factory=dict)
    specs: Mapping[str, RepoSpec] = field(default_factory=dict)

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


def go_online(monkeypatch: pytest.MonkeyPatch, hf_home: Path, hub: LocalHub) -> None:
    """Like :func:`activate`, but online, with ``hub`` as the Hugging Face endpoint.

    Loads then download what they ask for from ``hub`` into ``hf_home``, and the client
    records every file a loader asked for that a repo does not have: a first online run.
    """
    import huggingface_hub.constants as constants
    import huggingface_hub.hf_api as hf_api

    activate(monkeypatch, hf_home)
    for name, value in hub.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    # Read from HF_ENDPOINT once, when the client is first imported: the constants, the
    # client's module-level HfApi, and the HfApi transformers keeps once it made one.
    monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
    template = hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setattr(hf_api.api, "endpoint", hub.endpoint)
    try:
        import transformers.utils.hub as transformers_hub
    except ImportError:
        return
    monkeypatch.setattr(transformers_hub, "_hf_api", None)


@contextmanager
def _client_online() -> Iterator[None]:
    """The hub client allowed online for a moment, whatever the test process set."""
    import huggingface_hub.constants as constants
    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    saved, quiet = constants.HF_HUB_OFFLINE, are_progress_bars_disabled()
    constants.HF_HUB_OFFLINE = False
    disable_progress_bars()
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved
        if not quiet:
            enable_progress_bars()


def download_like_cli(
    hf_home: Path, hub: LocalHub, repo_ids: Sequence[str]
) -> dict[str, CachedRepo]:
    """Fill ``hf_home``'s cache as ``hf download REPO`` does, for each repo, from ``hub``."""
    from huggingface_hub import snapshot_download

    cache = hub_cache_dir(hf_home)
    cache.mkdir(parents=True, exist_ok=True)
    out = {}
    with _client_online():
        for repo_id in repo_ids:
            snapshot_download(repo_id, cache_dir=str(cache), endpoint=hub.endpoint)
            out[repo_id] = cached_repo(cache, repo_id)
    return out


def copy_hf_home(source: Path, target: Path, *, keep_links: bool = True) -> Path:
    """Copy a whole ``HF_HOME``, as a user copies a cache to another machine.

    ``keep_links`` copies the snapshot symlinks as links (``cp -a``, ``rsync -a``); without
    it every snapshot file becomes a plain copy of its blob (``cp -rL``, a zip archive, a
    file system without symlinks).
    """
    shutil.copytree(source, target, symlinks=keep_links)
    return target


RepoBuilder = Callable[[], RepoSpec]


def build_fake_hub(hf_home: Path, builders: Sequence[RepoBuilder] | None = None) -> FakeHub:
    """Build repos, serve them on a local hub and download each as ``hf download`` does.

    Args:
        hf_home: folder to use as ``HF_HOME``; created if missing.
        builders: repo builders to run; ``DEFAULT_BUILDERS`` (all tiny) when None.

    Returns:
        The hub, with every repo downloaded into ``hf_home``.
    """
    hub_cache_dir(hf_home).mkdir(parents=True, exist_ok=True)
    specs = [build() for build in (DEFAULT_BUILDERS if builders is None else builders)]
    for spec in specs:
        _check_repo_id(spec.repo_id)
    with LocalHub(specs) as hub:
        repos = download_like_cli(hf_home, hub, [spec.repo_id for spec in specs])
    return FakeHub(hf_home, repos, {spec.repo_id: spec for spec in specs})


# ------------------------------------------------------------------------ shared helpers


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Deterministic weight init that leaves the caller's RNG state untouched."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _json(obj: object, indent: int | None = 2, newline: bool = True) -> bytes:
    text = json.dumps(obj, indent=indent)
    return (text + ("\n" if newline else "")).encode()


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


def _transformers_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A transformers model's weights as a ``pytorch_model.bin`` of 2021-2022 holds them.

    The hub pages of the openai CLIP and Salesforce BLIP ``.bin`` files list a
    ``torch.LongStorage`` pickle import: those files also hold the int64 ``position_ids``
    buffers that transformers has since made non-persistent (loading drops them as
    unexpected keys). Added back here so the fake file has the same contents.
    """
    state = dict(model.state_dict())
    for name, buffer in model.named_buffers():
        if name.endswith("position_ids"):
            state[name] = buffer
    return state


def _saved_safetensors(model: torch.nn.Module) -> bytes:
    """``model.safetensors`` as transformers' ``save_pretrained`` writes it (tied weights once)."""
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)  # type: ignore[operator]
        return (Path(tmp) / "model.safetensors").read_bytes()


# The hub's default .gitattributes of a new model repo (shortened: the LFS patterns that matter).
_GITATTRIBUTES = "".join(
    f"*.{ext} filter=lfs diff=lfs merge=lfs -text\n"
    for ext in ("bin", "h5", "msgpack", "onnx", "ot", "pt", "pth", "safetensors")
).encode()


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
    "depicts",
)


# ------------------------------------------------------------- bert-base-uncased (tokenizer)

BERT_REPO_ID = "bert-base-uncased"


def clips_vocab() -> list[str]:
    """A WordPiece vocabulary laid out like bert-base-uncased's ``vocab.txt``, only shorter.

    Ids 0..103 are bert-base-uncased's: ``[PAD]`` 0, ``[unused0]`` 1, ``[unused1]`` 2 ...
    ``[UNK]`` 100, ``[CLS]`` 101, ``[SEP]`` 102, ``[MASK]`` 103. CLIPS' ids bos=1, eos=2,
    class=101, pad=0 index into this table (CLIPS repo, ``open_clip/tokenizer.py`` at
    f0c8140: ``CustomTokenizer(vocab_file, context_length=80, bos_token=1, eos_token=2,
    class_token=101, pad_token=0)``). Lower-case letters, digits and punctuation follow,
    then their ``##`` continuations and whole words: enough that real captions tokenize.
    """
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = [chr(c) for c in range(33, 127) if not chr(c).isupper()]
    vocab += chars
    vocab += ["##" + c for c in chars if c.isalnum()]
    vocab += [w for w in _WORDS if w not in vocab]
    return vocab


def _wordpiece_tokenizer_json(vocab: list[str]) -> bytes:
    """A fast-tokenizer ``tokenizer.json`` for a WordPiece vocabulary, BERT-uncased style.

    The components of bert-base-uncased's ``tokenizer.json``: BertNormalizer (clean text,
    Chinese characters split, lower case, accents stripped with lower case), BertPreTokenizer,
    WordPiece with ``##`` continuations and ``[UNK]``, a post-processor adding ``[CLS]`` and
    ``[SEP]`` (the ``tokenizers`` library's own BERT implementation builds exactly these).
    """
    from tokenizers.implementations import BertWordPieceTokenizer

    tok = BertWordPieceTokenizer({t: i for i, t in enumerate(vocab)}, lowercase=True)
    return tok.to_str(pretty=True).encode()


def _vocab_txt(vocab: list[str]) -> bytes:
    return ("\n".join(vocab) + "\n").encode()


def bert_base_uncased_repo() -> RepoSpec:
    """``bert-base-uncased``, the tokenizer the first CLIPS layout names.

    Files on main (hub tree of google-bert/bert-base-uncased at 86b5e09, "Updates the
    tokenizer configuration file (#62)"): ``.gitattributes``, ``LICENSE``, ``README.md``,
    ``config.json`` (570 B), ``tokenizer.json`` (466 kB), ``tokenizer_config.json`` (48 B:
    ``{"do_lower_case": true, "model_max_length": 512}``, blob page at 86b5e09),
    ``vocab.txt`` (232 kB), and weights for every framework (``model.safetensors``,
    ``pytorch_model.bin``, ``tf_model.h5``, ``flax_model.msgpack``, ``rust_model.ot``,
    ``model.onnx``, ``coreml/``), 3.45 GB that only a model load would read: not rebuilt.
    No ``special_tokens_map.json``: transformers' BERT defaults supply the specials.
    ``config.json`` keeps the real keys with the real values (BertForMaskedLM, 12 layers,
    768 wide; UNVERIFIED beyond its size: its text was not in any source read) except
    ``vocab_size``, the tiny vocabulary's.
    """
    vocab = clips_vocab()
    config = {
        "architectures": ["BertForMaskedLM"],
        "attention_probs_dropout_prob": 0.1,
        "gradient_checkpointing": False,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": 768,
        "initializer_range": 0.02,
        "intermediate_size": 3072,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": 512,
        "model_type": "bert",
        "num_attention_heads": 12,
        "num_hidden_layers": 12,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "transformers_version": "4.6.0.dev0",
        "type_vocab_size": 2,
        "use_cache": True,
        "vocab_size": len(vocab),
    }
    files = {
        ".gitattributes": _GITATTRIBUTES,
        "LICENSE": b"Apache License 2.0 (fake)\n",
        "README.md": b"---\nlanguage: en\nlicense: apache-2.0\n---\n# BERT base model (uncased)\n",
        "config.json": _json(config),
        "tokenizer.json": _wordpiece_tokenizer_json(vocab),
        "tokenizer_config.json": b'{"do_lower_case": true, "model_max_length": 512}',
        "vocab.txt": _vocab_txt(vocab),
    }
    return RepoSpec(BERT_REPO_ID, files)


# --------------------------------------------------------- open_clip hf-hub: repos (CLIPS)

ClipsLayout = Literal["bert", "clips"]
CLIPS_LAYOUTS: tuple[ClipsLayout, ...] = ("bert", "clips")


@dataclass(frozen=True)
class _ClipsShape:
    repo_id: str = "UCSC-VLAA/ViT-L-14-CLIPS-Recap-DataComp-1B"
    embed_dim: int = 48
    image_size: int = 336
    patch_size: int = 14
    context_length: int = 80  # the real value: the token layout depends on it
    vocab_size: int = 512  # > the tokenizer's, as the real 32000 > bert-base-uncased's 30522


CLIPS = _ClipsShape()
CLIPS_REPO_ID = CLIPS.repo_id
CLIPS_H14_REPO_ID = "UCSC-VLAA/ViT-H-14-CLIPS-224-Recap-DataComp-1B"


def _clips_tokenizer_files(vocab: list[str]) -> dict[str, bytes]:
    """The tokenizer files every CLIPS repo holds: bert-base-uncased's, saved by transformers 4.x.

    Hub trees of the L-14 (df3c5c3) and H-14 (3ed7286) repos: ``special_tokens_map.json``
    125 B, ``tokenizer.json`` 711 kB, ``tokenizer_config.json`` 1.19 / 1.22 kB (56 lines,
    commit page 3ed7286), ``vocab.txt`` 232 kB, all from the first commit and never changed.
    125 B is exactly ``json.dumps(indent=2)`` of the five BERT specials plus a newline, and
    other copies of bert-base-uncased saved by transformers 4.x list the same four files at
    the same sizes (e.g. CesarLeblanc/bert-base-uncased): so no bos or eos token anywhere.
    The ``tokenizer_config.json`` keys are transformers 4.x's ``BertTokenizer`` save format
    (UNVERIFIED: the file's text was not in any source read, only its size and line count).
    """
    specials = {
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
        "pad_token": "[PAD]",
        "sep_token": "[SEP]",
        "unk_token": "[UNK]",
    }
    decoder = {
        str(i): {
            "content": vocab[i],
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for i in (0, 100, 101, 102, 103)
    }
    tokenizer_config = {
        "added_tokens_decoder": decoder,
        "clean_up_tokenization_spaces": True,
        "cls_token": "[CLS]",
        "do_basic_tokenize": True,
        "do_lower_case": True,
        "mask_token": "[MASK]",
        "model_max_length": 512,
        "never_split": None,
        "pad_token": "[PAD]",
        "sep_token": "[SEP]",
        "strip_accents": None,
        "tokenize_chinese_chars": True,
        "tokenizer_class": "BertTokenizer",
        "unk_token": "[UNK]",
    }
    return {
        "special_tokens_map.json": _json(specials),
        "tokenizer.json": _wordpiece_tokenizer_json(vocab),
        "tokenizer_config.json": _json(tokenizer_config, newline=False),
        "vocab.txt": _vocab_txt(vocab),
    }


def _clips_model_cfg(
    repo_id: str, layout: ClipsLayout, image_size: int, vocab_size: int
) -> dict[str, object]:
    """``model_cfg`` of a CLIPS ``open_clip_config.json``, with tiny widths and depths.

    Keys and order as in the configs on the hub (commit pages f712f6c of the L-14-224 repo and
    3ed7286 of the H-14 repo; the L-14 repo's first config is 825 B, exactly what this dict
    gives with the real sizes and ``json.dumps(indent=2)``, the format of open_clip's
    ``push_to_hf_hub.save_config_for_hf``): a ViT without ``ln_pre``, avg-pooled, final LN
    after pooling; a text tower pooled on its *last* token with no causal mask, tanh GELU;
    ``context_length`` 80; ``hf_tokenizer_name: "bert-base-uncased"`` with
    ``tokenizer_kwargs: {"strip_sep_token": true}`` and no ``tokenizer_mode``.

    ``layout="clips"``: the form open_clip >= 3.0 reads for CLIPS (``text_cfg.tokenizer_mode:
    "clips"``, open_clip PR #1081, commit e2f3576, which passes it to ``HFTokenizer``) with
    the tokenizer in the repo itself (``hf_tokenizer_name`` = the repo). UNVERIFIED: the repos'
    configs were updated in Dec 2024 (825 -> 943 B for L-14, 851 -> 969 B for H-14) and the new
    text was not in any source read; the update predates PR #1081 (May 2025).
    """
    text_cfg: dict[str, object] = {
        "context_length": CLIPS.context_length,
        "vocab_size": vocab_size,
        "hf_tokenizer_name": BERT_REPO_ID if layout == "bert" else repo_id,
        "tokenizer_kwargs": {"strip_sep_token": True},
    }
    if layout == "clips":
        text_cfg["tokenizer_mode"] = "clips"
    text_cfg.update(
        {
            "width": 64,
            "heads": 2,
            "layers": 2,
            "pool_type": "last",
            "no_causal_mask": True,
            "act_kwargs": {"approximate": "tanh"},
        }
    )
    return {
        "embed_dim": CLIPS.embed_dim,
        "vision_cfg": {
            "image_size": image_size,
            "layers": 2,
            "width": 64,
            "head_width": 32,
            "patch_size": CLIPS.patch_size,
            "no_ln_pre": True,
            "pool_type": "avg",
            "final_ln_after_pool": True,
        },
        "text_cfg": text_cfg,
    }


def clips_repo(
    layout: ClipsLayout = "bert",
    weights: Sequence[WeightFormat] = ("bin",),
    repo_id: str = CLIPS_REPO_ID,
    image_size: int = CLIPS.image_size,
    seed: int = 1,
) -> RepoSpec:
    """A CLIPS open_clip ``hf-hub:`` repo, tiny and random.

    Files (hub trees of the L-14 repo at df3c5c3 and main e91dac9): ``.gitattributes``,
    ``open_clip_config.json``, ``open_clip_pytorch_model.bin`` (1.66 GB, a pickle: the only
    weights; no safetensors in any revision listed), the four tokenizer files of
    :func:`_clips_tokenizer_files`, and on main a ``README.md`` model card.

    Args:
        layout: ``"bert"``, the first published config (tokenizer from ``bert-base-uncased``);
            ``"clips"``, ``tokenizer_mode: "clips"`` with the tokenizer in the repo.
        weights: weight files to write (``safetensors`` only for tests of that path).
        repo_id: the L-14 repo by default; :func:`clips_h14_repo` for the H-14 one.
        image_size: 336 for L-14, 224 for the ``-224`` repos.
        seed: weight init seed.
    """
    vocab = clips_vocab()
    model_cfg = _clips_model_cfg(repo_id, layout, image_size, CLIPS.vocab_size)
    # ImageNet mean/std, bilinear, squash: the same commit pages as the model config.
    preprocess_cfg = {
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "interpolation": "bilinear",
        "resize_mode": "squash",
    }
    with _seeded(seed):
        model = _openclip_from_cfg(model_cfg)
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}
    files = {
        ".gitattributes": _GITATTRIBUTES,
        "open_clip_config.json": _json(config, newline=False),
        **_clips_tokenizer_files(vocab),
    }
    if layout == "clips":
        files["README.md"] = (
            "---\nlicense: apache-2.0\nlibrary_name: open_clip\n---\n"
            f"# Model card for {repo_id.split('/')[1]}\n\nCLIPS (arXiv 2411.16828).\n"
        ).encode()
    state = model.state_dict()
    if "bin" in weights:
        files["open_clip_pytorch_model.bin"] = _weights(state, "bin")
    if "safetensors" in weights:
        files["open_clip_model.safetensors"] = _weights(state, "safetensors")
    return RepoSpec(repo_id, files)


def clips_reference_ids(vocab_txt: Path, texts: Sequence[str], ctx: int = 80) -> list[list[int]]:
    """CLIPS token ids as the CLIPS authors made them, written out from their code, not ours.

    CLIPS repo ``open_clip/tokenizer.py`` at f0c8140: whitespace-cleaned text through
    ``BertWordPieceTokenizer(vocab.txt, lowercase=True).encode(text, add_special_tokens=False)``,
    ``[bos=1] + ids[:ctx-3] + [eos=2]``, padded with ``pad=0`` to ``ctx-1``, ``class=101`` last.
    (Non-ASCII cleaning, ftfy and HTML entities, is left to the product's parity tests.)
    """
    from tokenizers.implementations import BertWordPieceTokenizer

    tok = BertWordPieceTokenizer(str(vocab_txt), lowercase=True)
    rows = []
    for text in texts:
        ids = tok.encode(" ".join(text.split()), add_special_tokens=False).ids[: ctx - 3]
        row = [1, *ids, 2]
        rows.append(row + [0] * (ctx - 1 - len(row)) + [101])
    return rows


def clips_h14_repo(layout: ClipsLayout = "bert") -> RepoSpec:
    """``UCSC-VLAA/ViT-H-14-CLIPS-224-Recap-DataComp-1B``: the same layout at 224 pixels."""
    return clips_repo(layout, repo_id=CLIPS_H14_REPO_ID, image_size=224, seed=6)


def _openclip_from_cfg(model_cfg: Mapping[str, object]) -> torch.nn.Module:
    """Instantiate an open_clip model from a config dict, as ``create_model`` would."""
    from open_clip.model import CLIP

    cfg = json.loads(json.dumps(model_cfg))  # deep copy; open_clip mutates configs
    text = cfg["text_cfg"]
    for key in ("hf_tokenizer_name", "tokenizer_kwargs", "tokenizer_mode"):
        text.pop(key, None)  # tokenizer settings, not tower settings
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


def _added(content: str) -> dict[str, object]:
    return {
        "content": content,
        "single_word": False,
        "lstrip": False,
        "rstrip": False,
        "normalized": True,
    }


def _clip_tokenizer_files() -> dict[str, bytes]:
    """vocab.json, merges.txt, tokenizer.json, tokenizer_config.json, special_tokens_map.json.

    ``special_tokens_map.json`` (389 B) and ``tokenizer_config.json`` (592 B, no
    ``tokenizer_class``: transformers picks the class from ``config.json``) are one-line JSON,
    text as on the blob pages of duplicates of the repo ("Duplicate from
    openai/clip-vit-base-patch32": adasdimchom b101841, T5Forst fcf3d18, Manojb ab23cb7).
    """
    from transformers import CLIPTokenizer

    vocab, merges = _clip_bpe()
    # Annotated as list[str], but the tokenizers BPE model takes (left, right) pairs.
    tok = CLIPTokenizer(vocab=vocab, merges=merges)  # type: ignore[arg-type]
    specials = {
        "bos_token": _added("<|startoftext|>"),
        "eos_token": _added("<|endoftext|>"),
        "unk_token": _added("<|endoftext|>"),
        "pad_token": "<|endoftext|>",
    }
    tokenizer_config = {
        "unk_token": {**_added("<|endoftext|>"), "__type": "AddedToken"},
        "bos_token": {**_added("<|startoftext|>"), "__type": "AddedToken"},
        "eos_token": {**_added("<|endoftext|>"), "__type": "AddedToken"},
        "pad_token": "<|endoftext|>",
        "add_prefix_space": False,
        "errors": "replace",
        "do_lower_case": True,
        "name_or_path": "./clip_ViT_B_32/",
        "model_max_length": HF_CLIP.max_length,
    }
    return {
        "vocab.json": _json(vocab, indent=None, newline=False),
        "merges.txt": ("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)).encode(),
        "tokenizer.json": tok.backend_tokenizer.to_str(pretty=True).encode(),
        "tokenizer_config.json": _json(tokenizer_config, indent=None, newline=False),
        "special_tokens_map.json": _json(specials, indent=None, newline=False),
    }


def hf_clip_repo() -> RepoSpec:
    """``openai/clip-vit-base-patch32`` as a transformers repo, tiny and random.

    Files on main (hub trees of the repo's PR refs, which show main plus one change:
    refs/pr/13 and refs/pr/32): ``.gitattributes``, ``README.md``, ``config.json``,
    ``merges.txt``, ``preprocessor_config.json`` (316 B), ``pytorch_model.bin`` (605 MB,
    pickle with a ``torch.LongStorage``), ``special_tokens_map.json``, ``tokenizer.json``,
    ``tokenizer_config.json``, ``vocab.json``; not rebuilt: ``tf_model.h5``,
    ``flax_model.msgpack``. ``model.safetensors`` exists only in the refs/pr/32 ref
    ("Adding `safetensors` variant of this model"), never on main: a download of main gets
    the pickle, which transformers loads only on torch >= 2.6.

    ``config.json`` is transformers' own ``CLIPConfig`` save with the text config's legacy
    ``bos_token_id: 0, eos_token_id: 2, pad_token_id: 1`` of the real file (seen in the
    configs of repos derived from it, e.g. onnx-community/clip-vit-base-patch32_hidden-states);
    the real file is a 4.x full dump (4.19 kB) whose other keys transformers fills with
    defaults anyway (UNVERIFIED key by key).
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
            # eos_token_id 2 selects the legacy pooling on the highest token id, which is
            # <|endoftext|> in CLIP vocabularies.
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
    files = {
        ".gitattributes": _GITATTRIBUTES,
        "README.md": b"---\ntags:\n- vision\n---\n# Model Card: CLIP\n",
        "config.json": _json(config.to_dict()),
        "pytorch_model.bin": _weights(_transformers_state(model), "bin"),
        # Blob page of the file in duplicates of the repo (e.g. Manojb ab23cb7), 316 B.
        "preprocessor_config.json": _json(
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
        ),
        **_clip_tokenizer_files(),
    }
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


def _blip_tokenizer_files(vocab: list[str], name_or_path: str) -> dict[str, bytes]:
    """BLIP's tokenizer files: bert-base-uncased's, with no ``[DEC]`` or ``[ENC]``.

    Hub trees of both repos: ``special_tokens_map.json`` 125 B (the five BERT specials, as
    for CLIPS above), ``tokenizer.json`` 711 kB, ``vocab.txt`` 232 kB. The decoder's start
    token (``bos_token_id`` 30522, once ``[DEC]``) is not in the tokenizer: transformers'
    ``BlipForConditionalGeneration.generate`` takes it from the model config. The
    ``tokenizer_config.json`` text is the captioning repo's (506 B, "Update
    tokenizer_config.json (#16)", blob page of refs/pr/20 at 637f179).
    """
    specials = {
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
        "pad_token": "[PAD]",
        "sep_token": "[SEP]",
        "unk_token": "[UNK]",
    }
    tokenizer_config = {
        "cls_token": "[CLS]",
        "do_basic_tokenize": True,
        "do_lower_case": True,
        "mask_token": "[MASK]",
        "model_max_length": 512,
        "name_or_path": name_or_path,
        "never_split": None,
        "pad_token": "[PAD]",
        "processor_class": "BlipProcessor",
        "sep_token": "[SEP]",
        "special_tokens_map_file": None,
        "strip_accents": None,
        "tokenize_chinese_chars": True,
        "tokenizer_class": "BertTokenizer",
        "unk_token": "[UNK]",
        "model_input_names": ["input_ids", "attention_mask"],
    }
    return {
        "special_tokens_map.json": _json(specials),
        "tokenizer.json": _wordpiece_tokenizer_json(vocab),
        "tokenizer_config.json": _json(tokenizer_config),
        "vocab.txt": _vocab_txt(vocab),
    }


def _blip_model(model_class: str, vocab: list[str], seed: int) -> torch.nn.Module:
    """A tiny BLIP with the real text config's special ids.

    Weights are drawn wider than transformers' defaults (std 0.2, not 0.02 for the text
    side and 1e-10 for the vision side): at the default scale the image barely moves the
    decoder, and every image would get the same random caption.
    """
    import transformers
    from transformers import BlipConfig

    init = 0.2
    config = BlipConfig(
        text_config={
            # The real vocab_size is 30524: bert-base-uncased's 30522 plus two (once [DEC]
            # and [ENC]), with bos_token_id 30522 (transformers' BlipTextConfig defaults,
            # and the generation configs of repos fine-tuned from it, e.g. dblasko/
            # blip-dalle3-img2prompt 2148205: bos 30522, eos 2, pad 0).
            "vocab_size": len(vocab) + 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 64,
            "bos_token_id": len(vocab),
            "sep_token_id": 102,  # [SEP] ends a generated text
            "pad_token_id": 0,
            "eos_token_id": 2,
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
        return getattr(transformers, model_class)(config)


def blip_caption_repo() -> RepoSpec:
    """``Salesforce/blip-image-captioning-base``: ``BlipForConditionalGeneration``, tiny, random.

    Files on main (hub tree at 82a3776): ``.gitattributes``, ``README.md``, ``config.json``,
    ``preprocessor_config.json`` (287 B), ``pytorch_model.bin`` (990 MB, pickle with a
    ``torch.LongStorage``), ``special_tokens_map.json``, ``tokenizer.json``,
    ``tokenizer_config.json``, ``vocab.txt``; not rebuilt: ``tf_model.h5``. No
    ``model.safetensors`` (only in the refs/pr/38 ref) and no ``generation_config.json``.
    The preprocessor text is the blob page of refs/pr/44 at 14216c0 ("Update
    preprocessor_config.json", the last change on main): ``"size": 384`` as a plain number,
    no rescale, resample or padding keys.
    """
    vocab = clips_vocab()
    model = _blip_model("BlipForConditionalGeneration", vocab, seed=4)
    files = {
        ".gitattributes": _GITATTRIBUTES,
        "README.md": b"---\npipeline_tag: image-to-text\nlicense: bsd-3-clause\n---\n# BLIP\n",
        "config.json": _json(model.config.to_dict()),
        "pytorch_model.bin": _weights(_transformers_state(model), "bin"),
        "preprocessor_config.json": _json(
            {
                "do_normalize": True,
                "do_resize": True,
                "image_mean": _OPENAI_MEAN,
                "image_processor_type": "BlipImageProcessor",
                "image_std": _OPENAI_STD,
                "processor_class": "BlipProcessor",
                "size": BLIP.image_size,
            }
        ),
        **_blip_tokenizer_files(vocab, "bert-base-uncased"),
    }
    return RepoSpec(BLIP.caption_repo_id, files)


def blip_vqa_repo() -> RepoSpec:
    """``Salesforce/blip-vqa-base``: ``BlipForQuestionAnswering``, tiny, random.

    Files on main (hub tree at 787b3d3): as the captioning repo, plus ``model.safetensors``
    ("Adding `safetensors` variant of this model (#7)", merged), so both weight formats.
    ``preprocessor_config.json`` is 445 B, the size of the text of Salesforce/
    blip-vqa-capfilt-large's (blob page at 15e21cb, the same author's "Upload processor"):
    ``do_pad``, ``do_rescale``, ``resample`` 3, ``rescale_factor``, ``size`` as height and
    width, ``size_divisor`` 32. That text is used here (UNVERIFIED for this repo beyond the
    size and author). ``tokenizer_config.json`` is 592 B here; its text was not found, the
    captioning repo's keys are used.
    """
    vocab = clips_vocab()
    model = _blip_model("BlipForQuestionAnswering", vocab, seed=5)
    state = _transformers_state(model)
    files = {
        ".gitattributes": _GITATTRIBUTES,
        "README.md": b"---\npipeline_tag: visual-question-answering\n---\n# BLIP VQA\n",
        "config.json": _json(model.config.to_dict()),
        "pytorch_model.bin": _weights(state, "bin"),
        "model.safetensors": _saved_safetensors(model),
        "preprocessor_config.json": _json(
            {
                "do_normalize": True,
                "do_pad": True,
                "do_rescale": True,
                "do_resize": True,
                "image_mean": _OPENAI_MEAN,
                "image_processor_type": "BlipImageProcessor",
                "image_std": _OPENAI_STD,
                "processor_class": "BlipProcessor",
                "resample": 3,
                "rescale_factor": 0.00392156862745098,
                "size": {"height": BLIP.image_size, "width": BLIP.image_size},
                "size_divisor": 32,
            }
        ),
        **_blip_tokenizer_files(vocab, "ybelkada/blip-vqa-base"),
    }
    return RepoSpec(BLIP.vqa_repo_id, files)


# --------------------------------------------------- open_clip builtin tags (ViT-B-32:openai)


def openclip_builtin_repo(
    arch: str = "ViT-B-32", tag: str = "openai", fp16: bool = True
) -> RepoSpec:
    """The hub file open_clip downloads for ``create_model_and_transforms(arch, pretrained=tag)``.

    open_clip maps builtin tags to hub repos in ``open_clip.pretrained`` (``ViT-B-32`` +
    ``openai`` is ``timm/vit_base_patch32_clip_224.openai/``, no file name, meaning
    ``open_clip_pytorch_model.bin``, for which it asks for ``open_clip_model.safetensors``
    first; the repo has both, hub tree at ab5b8ef). A first online run fetches only that
    file, which is all this repo holds. The weights are the real architecture at full size
    with random values.

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
    ``DEFAULT_BUILDERS``; written straight into the cache (no hub round trip for 300 MB).
    """
    return write_cached_repo(hub_cache_dir(hf_home), openclip_builtin_repo(arch, tag))


DEFAULT_BUILDERS: tuple[RepoBuilder, ...] = (
    clips_repo,
    bert_base_uncased_repo,
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
