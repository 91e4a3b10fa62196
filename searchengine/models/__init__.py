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
    "RUNTIMES",
    "Encoder",
    "ModelKind",
    "ModelSpec",
    "l2_normalize",
    "load_encoder",
    "parse_model_spec",
]


from searchengine.values import DEVICES, PRECISIONS, RUNTIMES


def load_encoder(
    spec: str | ModelSpec, device: str = "auto", runtime: str = "auto", precision: str = "fp32"
) -> Encoder:
    """Load the model a spec string names, through its own library.

    Args:
        spec: a model spec string (see ``parse_model_spec``) or a parsed spec.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        runtime: ``auto`` runs open_clip models in ONNX Runtime on a CPU (exported
            and verified against torch once per model; torch if that fails) and
            in torch on CUDA; ``torch`` or ``onnx`` force one.
        precision: ``fp32``, or ``int8``: the image tower built and checked by
            ``models.quantize`` (ONNX Runtime on the CPU; the text tower stays fp32).
            It must have passed its check (``quantize.prepare_int8``).

    Raises:
        ConfigError: unknown device, runtime or precision, or ``onnx`` (or ``int8``)
            asked for where it cannot run.
        UnknownModelError: the spec names no model.
        WeightsUnavailableError: weights are not cached and cannot be downloaded.
        ModelError: ``runtime="onnx"`` and the ONNX export failed verification.
    """
    from searchengine.errors import ConfigError
    from searchengine.models.loading import check_hub

    parsed = parse_model_spec(spec) if isinstance(spec, str) else spec
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}; use one of: {', '.join(RUNTIMES)}")
    if device not in DEVICES:
        raise ConfigError(f"unknown device {device!r}; use one of: {', '.join(DEVICES)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; use one of: {', '.join(PRECISIONS)}")
    if precision != "fp32" and (runtime == "torch" or parsed.kind is ModelKind.TRANSFORMERS):
        raise ConfigError(
            f"the {precision} image tower runs open_clip models in ONNX Runtime, not "
            f"{parsed.spec} in torch; use --precision fp32"
        )
    if parsed.kind is ModelKind.TRANSFORMERS:
        if runtime == "onnx":
            raise ConfigError(
                f"--runtime onnx supports open_clip models, not {parsed.spec}; use auto or torch"
            )
        check_hub(parsed)  # before torch is imported: a silent hub fails in seconds
        from searchengine.models.hf_clip import TransformersClipEncoder

        return TransformersClipEncoder(parsed, device)
    if runtime != "torch":
        from searchengine.models.runtime import load_onnx_encoder

        encoder = load_onnx_encoder(parsed, device, required=runtime == "onnx", precision=precision)
        if encoder is not None:
            return encoder
    check_hub(parsed)
    from searchengine.models.openclip import OpenClipEncoder

    return OpenClipEncoder(parsed, device)
