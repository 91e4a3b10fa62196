"""Which runtime runs an open_clip model on this machine: ONNX Runtime or torch.

On a CPU, a verified ONNX export (``onnx``) is used, made on first use
(``onnx_export``); a GPU, a failed export or a failed verification mean torch.
This module sits above both, so the torch-free runtime never imports the exporter.
"""

from __future__ import annotations

import logging

from searchengine.errors import ConfigError, ModelError
from searchengine.models.base import Encoder
from searchengine.models.exports import read_export
from searchengine.models.onnx import OnnxClipEncoder, cuda_possible
from searchengine.models.spec import ModelSpec

log = logging.getLogger(__name__)


def load_onnx_encoder(
    spec: ModelSpec, device: str, *, required: bool, precision: str = "fp32"
) -> Encoder | None:
    """The fastest encoder for an open_clip spec on the CPU, or None for torch.

    With ``required`` (``--runtime onnx``) failures raise; otherwise (``auto``) a GPU,
    a failed export or a failed verification mean torch, and the torch model that
    an export loaded anyway is returned instead of being loaded twice. ``precision``
    ``int8`` runs the image tower ``quantize`` built and checked (on the CPU, whatever
    the device: the vectors of a collection embedded that way come from it alone).

    Raises:
        ConfigError: ``required`` with ``--device cuda``.
        ModelError: ``required`` and the export failed or did not verify.
    """
    if precision == "int8":
        device, required = "cpu", True
    if device == "cuda" or (device == "auto" and cuda_possible() and _torch_sees_cuda()):
        if required:
            raise ConfigError(
                "--runtime onnx runs on the CPU; use --device cpu, or --runtime torch for CUDA"
            )
        return None
    # A failed export is retried once the packages that made it change (read_export
    # refuses an export by other versions): an upgrade may well have fixed the exporter.
    export = read_export(spec)
    if export is None:
        from searchengine.models.loading import check_hub

        check_hub(spec)  # an export needs the weights: fail in seconds if they cannot come
        from searchengine.models.onnx_export import export_model  # imports torch

        export, torch_encoder = export_model(spec)
        if not export.verified and not required:
            log.warning("using torch for %s: %s", spec.spec, export.reason)
            return torch_encoder
        if torch_encoder is not None:
            torch_encoder.close()
    if not export.verified:
        if required:
            raise ModelError(
                f"the ONNX export of {spec.spec} cannot be used ({export.reason}); "
                "use --runtime torch"
            )
        return None
    return OnnxClipEncoder(export, precision=precision)


def _torch_sees_cuda() -> bool:
    from searchengine.models.loading import resolve_device

    return resolve_device("auto") == "cuda"
