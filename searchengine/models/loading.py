"""What every loader shares: device choice, mixed precision, offline errors."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
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


def _offline() -> bool:
    return any(
        os.environ.get(var, "").lower() in ("1", "true", "yes", "on")
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def weights_unavailable_message(spec: ModelSpec) -> str:
    """One line that says weights are missing and names the three ways out."""
    where = (
        "offline mode (HF_HUB_OFFLINE=1)" if _offline() else "the Hugging Face hub is unreachable"
    )
    local = (
        "pass a local checkpoint (ARCH:/path/to/checkpoint.pt or local-dir:/path)"
        if spec.kind is not ModelKind.TRANSFORMERS
        else "pass a local model folder (hf:/path/to/folder)"
    )
    return (
        f"weights for {spec.spec} are not in the local Hugging Face cache and {where}: "
        f"connect to the internet once, pre-populate the cache (HF_HOME), or {local}"
    )


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
        if _is_hub_miss(exc) or not _repo_cached(spec):
            raise WeightsUnavailableError(weights_unavailable_message(spec)) from exc
        raise


def _repo_cached(spec: ModelSpec) -> bool:
    """Whether the hub repo a spec loads from has config and weights in the local cache.

    Some loaders (transformers' image processor) drop the hub client's exception,
    so after a failure the cache itself is asked. Local paths count as cached.
    """
    from huggingface_hub import try_to_load_from_cache

    if spec.kind is ModelKind.TRANSFORMERS:
        if os.path.isdir(spec.source):
            return True
        # A cached config without weights is a miss too (a download cut short):
        # transformers then says only that the repo "does not appear to have" them.
        config_name, weight_names = "config.json", list(_TRANSFORMERS_WEIGHTS)
    elif spec.kind is ModelKind.OPEN_CLIP_HUB:
        # A cached config without weights is a miss too (open_clip only warns).
        config_name = "open_clip_config.json"
        weight_names = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    else:
        return True
    config = try_to_load_from_cache(spec.source, config_name)
    weights = [try_to_load_from_cache(spec.source, name) for name in weight_names]
    return isinstance(config, str) and any(isinstance(w, str) for w in weights)


# What transformers' from_pretrained reads weights from, single-file or sharded.
_TRANSFORMERS_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


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
