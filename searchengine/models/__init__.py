"""Model specs and encoders: every CLIP-family model behind one protocol."""

from __future__ import annotations

from searchengine.models.base import Encoder, l2_normalize
from searchengine.models.spec import (
    DEFAULT_MODEL,
    ModelKind,
    ModelSpec,
    parse_model_spec,
)

__all__ = [
    "DEFAULT_MODEL",
    "Encoder",
    "ModelKind",
    "ModelSpec",
    "l2_normalize",
    "load_encoder",
    "parse_model_spec",
]


def load_encoder(spec: str | ModelSpec, device: str = "auto") -> Encoder:
    """Load the model a spec string names, through its own library.

    Args:
        spec: a model spec string (see ``parse_model_spec``) or a parsed spec.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.

    Raises:
        UnknownModelError: the spec names no model.
        WeightsUnavailableError: weights are not cached and cannot be downloaded.
    """
    parsed = parse_model_spec(spec) if isinstance(spec, str) else spec
    if parsed.kind is ModelKind.TRANSFORMERS:
        from searchengine.models.hf_clip import TransformersClipEncoder

        return TransformersClipEncoder(parsed, device)
    from searchengine.models.openclip import OpenClipEncoder

    return OpenClipEncoder(parsed, device)
