"""What every loader shares: device choice, mixed precision, hub files, offline errors,
and a short, stated time-out for the hub.

An offline failure names the exact repo and file missing from the Hugging Face cache and
the command that fetches it. The repo a model needs is not always the one in its spec: the
first CLIPS layout reads its tokenizer from ``bert-base-uncased``.

The hub client waits ``HF_HUB_ETAG_TIMEOUT`` (10 s) on each of the dozen files a model
reads, so a hub that accepts connections but never answers cost minutes per load
attempt, after torch and transformers (~1 GB) were imported for nothing. ``check_hub``
asks first, once, with ``HUB_TIMEOUT``: files that are not cached and a hub that does not
answer in time fail in seconds, before any heavy import. A model whose files are all
cached loads without asking the hub (``cached``).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from searchengine.errors import ConfigError, WeightsUnavailableError
from searchengine.models.spec import ModelKind, ModelSpec
from searchengine.values import DEVICES


def resolve_device(device: str) -> str:
    """``auto`` becomes ``cuda`` when a GPU is visible, else ``cpu``.

    Raises:
        ConfigError: unknown device name, or ``cuda`` asked for without a GPU.
    """
    if device not in DEVICES:
        raise ConfigError(f"unknown device {device!r}; use one of: {', '.join(DEVICES)}")
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is visible; use auto or cpu")
    return device


def autocast(device: str) -> contextlib.AbstractContextManager[Any]:
    """Half precision on CUDA (bf16 where supported, else fp16); nothing on CPU."""
    if device != "cuda":
        return contextlib.nullcontext()
    import torch

    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def offline() -> bool:
    """Whether the hub client is in offline mode (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``)."""
    from huggingface_hub import constants

    return bool(constants.is_offline_mode()) or any(
        os.environ.get(var, "").lower() in ("1", "true", "yes", "on")
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


# ------------------------------------------------------------------------- messages


def download_command(repo_id: str, files: Sequence[str] = ()) -> str:
    """The shell command that puts ``repo_id`` (or just ``files`` of it) in the cache.

    huggingface_hub 0.34 introduced ``hf``; ``huggingface-cli`` is what older ones install.
    """
    from importlib import metadata

    try:
        major, minor = (int(p) for p in metadata.version("huggingface_hub").split(".")[:2])
    except (metadata.PackageNotFoundError, ValueError):
        major, minor = 1, 0
    tool = "hf download" if (major, minor) >= (0, 34) else "huggingface-cli download"
    return " ".join([tool, repo_id, *files])


def missing_message(repo_id: str, names: Sequence[str], needed_by: str, whole_repo: bool) -> str:
    """One line: which repo and file are missing, why they were not fetched, how to fetch them.

    Args:
        repo_id: the hub repo.
        names: the file, or alternatives any one of which would do (the first is fetched).
        needed_by: the model spec that needs them.
        whole_repo: suggest downloading the whole repo (a model needs several of its files).
    """
    where = (
        "offline mode (HF_HUB_OFFLINE=1) is on"
        if offline()
        else "the Hugging Face hub could not be reached"
    )
    shown = [n for n in names if not n.endswith(".index.json")][:2]
    what = f"{repo_id} ({' or '.join(shown)})" if shown else repo_id
    own = needed_by.removeprefix("hf-hub:").removeprefix("hf:")
    role = "" if repo_id == own else f", which {needed_by} needs,"
    fetch = download_command(repo_id, () if whole_repo or not names else (names[0],))
    return (
        f"{what}{role} is not in the local Hugging Face cache and {where}: "
        f"fetch it with `{fetch}` (or run once with internet access)"
    )


def weights_unavailable_message(spec: ModelSpec) -> str:
    """The missing-file line for a model spec, naming the first file the cache lacks."""
    missing = first_missing(spec)
    if missing is not None:
        repo_id, names = missing
        # A builtin tag needs one file of a repo that holds several copies of the weights.
        whole = spec.kind is not ModelKind.OPEN_CLIP
        return missing_message(repo_id, names, spec.spec, whole_repo=whole)
    where = "offline mode (HF_HUB_OFFLINE=1)" if offline() else "the hub is unreachable"
    local = (
        "pass a local model folder (hf:/path/to/folder)"
        if spec.kind is ModelKind.TRANSFORMERS
        else "pass a local checkpoint (ARCH:/path/to/checkpoint.pt or local-dir:/path)"
    )
    return (
        f"weights for {spec.spec} are not in the local Hugging Face cache and {where}: "
        f"fetch {hub_repo(spec) or 'the model'} once with internet access, or {local}"
    )


# ------------------------------------------------------------------- cache contents

# What each kind of repo must hold for a load: groups of alternatives, in load order.
_OPEN_CLIP_FILES = (
    ("open_clip_config.json",),
    ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"),
)
_TRANSFORMERS_FILES = (
    ("config.json",),
    (
        "model.safetensors",
        "model.safetensors.index.json",
        "pytorch_model.bin",
        "pytorch_model.bin.index.json",
    ),
    ("preprocessor_config.json",),
    ("tokenizer_config.json",),
    ("tokenizer.json", "vocab.json", "vocab.txt"),
)


def hub_repo(spec: ModelSpec) -> str | None:
    """The hub repo a spec's weights come from (None for local files and folders)."""
    if spec.kind in (ModelKind.OPEN_CLIP_HUB, ModelKind.TRANSFORMERS):
        return None if os.path.isdir(spec.source) else spec.source
    if spec.kind is ModelKind.OPEN_CLIP and not os.path.isabs(spec.source):
        return _builtin_file(spec)[0]
    return None


def _builtin_file(spec: ModelSpec) -> tuple[str | None, tuple[str, ...]]:
    """The hub repo and weight files open_clip reads for a builtin ``ARCH:TAG``."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(spec.arch or "", spec.source)
    hub = str(cfg.get("hf_hub", "") or "")
    if not hub:
        return None, ()
    # Same split as open_clip.pretrained.download_pretrained: "org/name/" or "org/name/file".
    repo_id, filename = os.path.split(hub)
    if not filename or filename == "open_clip_pytorch_model.bin":
        return repo_id, ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
    if filename.endswith((".bin", ".pth")):
        return repo_id, (filename[:-4] + ".safetensors", filename)
    return repo_id, (filename,)


def first_missing(spec: ModelSpec) -> tuple[str, Sequence[str]] | None:
    """The first (repo, files) the local cache lacks for ``spec``, or None if nothing is missing.

    ``files`` are alternatives: the repo needs one of them. Used after a load failed, to
    say what to fetch; a repo none of whose checked files is missing gets a generic line.
    """
    repo_id = hub_repo(spec)
    if repo_id is None:
        return None
    if spec.kind is ModelKind.OPEN_CLIP:
        groups: Sequence[Sequence[str]] = (_builtin_file(spec)[1],)
    elif spec.kind is ModelKind.OPEN_CLIP_HUB:
        groups = _OPEN_CLIP_FILES
    else:
        groups = _TRANSFORMERS_FILES
    for group in groups:
        if not any(_cached(repo_id, name) for name in group):
            return repo_id, tuple(group)
    return None


def _cached(repo_id: str, filename: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, filename), str)


def hub_file(repo_id: str, names: Sequence[str], needed_by: str) -> Path:
    """The first of ``names`` that ``repo_id`` holds, from the cache or downloaded now.

    Online, each name is asked for in turn (a name the repo lacks is skipped; the client
    records it as absent). Offline, or when the hub cannot be reached, the cache answers.

    Raises:
        WeightsUnavailableError: none of the names can be had; the message names the
            repo, the file and the command that fetches it.
    """
    from huggingface_hub import errors as hub_errors
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    error: Exception | None = None
    for name in names:
        if not offline():
            try:
                return Path(hf_hub_download(repo_id, name))
            except hub_errors.RemoteEntryNotFoundError:
                continue  # the repo does not have it; try the next name
            except hub_errors.RepositoryNotFoundError as exc:
                raise WeightsUnavailableError(
                    f"{repo_id}, which {needed_by} needs, does not exist on the Hugging Face hub "
                    "(or needs a login): check the name in the model's config"
                ) from exc
            except (OSError, ValueError) as exc:  # unreachable hub, cut download
                error = exc
        cached = try_to_load_from_cache(repo_id, name)
        if isinstance(cached, str):
            return Path(cached)
    raise WeightsUnavailableError(
        missing_message(repo_id, names[:1], needed_by, whole_repo=False)
    ) from error


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file (empty dict if the file holds something else)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


# ------------------------------------------------------------------ the hub's time-out

HUB_TIMEOUT = 5.0  # seconds the hub gets to answer before a load gives up


def cached(spec: ModelSpec) -> bool:
    """Whether loading ``spec`` needs nothing from the network: a local model, or a hub
    repo whose files are all in the cache (builtin tags are not checked: False)."""
    if spec.kind not in (ModelKind.TRANSFORMERS, ModelKind.OPEN_CLIP_HUB):
        return spec.kind is ModelKind.OPEN_CLIP_DIR
    return first_missing(spec) is None


def check_hub(spec: ModelSpec, timeout: float = HUB_TIMEOUT) -> None:
    """Fail fast when a hub model's files are not cached and the hub cannot serve them.

    Nothing to do for local models, builtin tags (which repo they read is open_clip's to
    say, after importing torch) and complete cached repos. Otherwise one metadata
    request for the repo's config, with ``timeout``, tells whether a download can start.

    Raises:
        WeightsUnavailableError: offline, or the hub did not answer within ``timeout``,
            or it has no such repo.
    """
    if spec.kind not in (ModelKind.TRANSFORMERS, ModelKind.OPEN_CLIP_HUB):
        return
    missing = first_missing(spec)
    if missing is None:
        return
    if offline():
        raise WeightsUnavailableError(weights_unavailable_message(spec))
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url

    repo_id, names = missing
    config = _OPEN_CLIP_FILES[0][0] if spec.kind is ModelKind.OPEN_CLIP_HUB else "config.json"
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, config), timeout=timeout)
    except Exception as exc:  # any failure to fetch means no download: say which
        lines = str(exc).strip().splitlines()
        reason = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
        raise WeightsUnavailableError(
            f"{repo_id} ({names[0]}) is not in the local Hugging Face cache and the hub at "
            f"{constants.ENDPOINT} did not serve it within {timeout:g} s ({reason}): fetch "
            f"it with `{download_command(repo_id)}` where the hub can be reached, or pass a "
            "local model folder"
        ) from exc


# ------------------------------------------------------------------ error mapping


@contextlib.contextmanager
def hub_errors_to_weights_error(spec: ModelSpec) -> Iterator[None]:
    """Turn the hub client's many 'could not fetch' failures into one clear error.

    open_clip wraps hub failures in RuntimeError and transformers raises OSError;
    both carry the hub client's own exception as the cause, which is what we test.
    """
    try:
        yield
    except WeightsUnavailableError:
        raise
    except (OSError, RuntimeError, ValueError) as exc:
        if _is_hub_miss(exc) or first_missing(spec) is not None:
            raise WeightsUnavailableError(weights_unavailable_message(spec)) from exc
        raise


def _is_hub_miss(exc: BaseException) -> bool:
    from huggingface_hub import errors as hub_errors

    misses: tuple[type[BaseException], ...] = (
        hub_errors.LocalEntryNotFoundError,
        hub_errors.OfflineModeIsEnabled,
        hub_errors.RepositoryNotFoundError,
        hub_errors.EntryNotFoundError,
    )
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, misses):
            return True
        text = str(current)
        if "offline" in text.lower() or "LocalEntryNotFound" in text or "couldn't connect" in text:
            return True
        current = current.__cause__ or current.__context__
    return False
