"""BLIP through transformers: image captioning and visual question answering.

A BLIP model is named by its hub repo id (``Salesforce/blip-image-captioning-base``)
or a local folder in the same format; an ``hf:`` prefix is accepted, as in encoder
specs. torch and transformers are imported when a model is loaded, not before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image

from searchengine.errors import ModelError, QueryError
from searchengine.models.loading import (
    autocast,
    cached,
    hub_errors_to_weights_error,
    resolve_device,
)
from searchengine.models.spec import ModelSpec, parse_transformers_model

DEFAULT_CAPTION_MODEL = "Salesforce/blip-image-captioning-base"
DEFAULT_VQA_MODEL = "Salesforce/blip-vqa-base"

# Decoding as in the BLIP authors' demo: beam search with 3 beams, never sampling, so
# the same image always gets the same text (captions are cached and compared). Bounds
# keep a degenerate model from running on: captions of 5-20 tokens, answers of <= 10.
CAPTION_GENERATION: dict[str, Any] = {
    "do_sample": False,
    "num_beams": 3,
    "min_new_tokens": 5,
    "max_new_tokens": 20,
}
ANSWER_GENERATION: dict[str, Any] = {
    "do_sample": False,
    "num_beams": 3,
    "max_new_tokens": 10,
}
MAX_QUESTION_CHARS = 500


def parse_blip_model(name: str) -> ModelSpec:
    """A BLIP model name as a spec: an existing local folder (made absolute) or a repo id.

    Raises:
        UnknownModelError: the name is neither a folder nor of the form ``ORG/NAME``.
    """
    return parse_transformers_model(
        name, "BLIP", f"e.g. {DEFAULT_CAPTION_MODEL} or {DEFAULT_VQA_MODEL}"
    )


class _Blip:
    """What both BLIP heads share: loading, device, generation, decoding."""

    def __init__(self, model: str, device: str, model_class: str, batch_size: int) -> None:
        import torch
        import transformers
        from transformers import BlipProcessor
        from transformers.utils import logging as hf_logging

        # The library's own per-tensor loading bar would clutter our output.
        hf_logging.disable_progress_bar()

        spec = parse_blip_model(model)
        self.model = spec.spec
        self.device = resolve_device(device)
        self.batch_size = batch_size
        # A complete cached copy is loaded as it is: asking the hub whether each of its
        # files changed would cost a time-out per file whenever the hub is unreachable.
        local = cached(spec)
        try:
            with hub_errors_to_weights_error(spec):
                self._processor: Any = BlipProcessor.from_pretrained(
                    spec.source, local_files_only=local
                )
                net: Any = getattr(transformers, model_class).from_pretrained(
                    spec.source, local_files_only=local
                )
        except (OSError, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ModelError(f"cannot load {spec.spec} as a {model_class}: {first}") from exc
        net.to(self.device).eval()
        self._net: Any = net
        self._torch = torch

    def _generate(self, inputs: Any, settings: dict[str, Any]) -> list[str]:
        torch = self._torch
        if self._net is None:
            raise ModelError(f"{self.model} was closed; load it again")
        inputs = inputs.to(self.device)
        with torch.inference_mode(), autocast(self.device):
            ids = self._net.generate(**inputs, **settings)
        texts = self._processor.batch_decode(ids, skip_special_tokens=True)
        return [" ".join(str(t).split()) for t in texts]

    def close(self) -> None:
        """Release the model's memory."""
        self._net = None


class BlipCaptioner(_Blip):
    """``BlipForConditionalGeneration``: one caption per image.

    Args:
        model: hub repo id or local folder (default ``Salesforce/blip-image-captioning-base``).
        device: ``auto`` (CUDA with half precision when present), ``cpu`` or ``cuda``.
        batch_size: images per generate call.

    Raises:
        WeightsUnavailableError: not cached and the hub unreachable.
        ModelError: the folder or repo holds no loadable BLIP captioning model.
    """

    def __init__(
        self, model: str = DEFAULT_CAPTION_MODEL, device: str = "auto", batch_size: int = 8
    ) -> None:
        super().__init__(model, device, "BlipForConditionalGeneration", batch_size)

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        """One caption per image, in order (unconditional: no text prompt)."""
        captions: list[str] = []
        for start in range(0, len(images), self.batch_size):
            batch = [im.convert("RGB") for im in images[start : start + self.batch_size]]
            inputs = self._processor(images=batch, return_tensors="pt")
            captions += self._generate(inputs, CAPTION_GENERATION)
        return captions


class BlipQuestionAnswerer(_Blip):
    """``BlipForQuestionAnswering``: a short answer to a question about an image.

    Args:
        model: hub repo id or local folder (default ``Salesforce/blip-vqa-base``).
        device: ``auto`` (CUDA with half precision when present), ``cpu`` or ``cuda``.

    Raises:
        WeightsUnavailableError: not cached and the hub unreachable.
        ModelError: the folder or repo holds no loadable BLIP VQA model.
    """

    def __init__(self, model: str = DEFAULT_VQA_MODEL, device: str = "auto") -> None:
        super().__init__(model, device, "BlipForQuestionAnswering", batch_size=1)

    def answer(self, image: Image.Image, question: str) -> str:
        """The model's answer to ``question`` about ``image``.

        Raises:
            QueryError: the question is empty or too long.
        """
        question = check_question(question)
        inputs = self._processor(
            images=image.convert("RGB"), text=question, return_tensors="pt", truncation=True
        )
        return self._generate(inputs, ANSWER_GENERATION)[0]


def check_question(text: str) -> str:
    """Normalise a question or raise ``QueryError`` saying what to ask instead."""
    cleaned = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    if not cleaned:
        raise QueryError('the question is empty; ask about the image, e.g. "where is the dog?"')
    if len(cleaned) > MAX_QUESTION_CHARS:
        raise QueryError(
            f"the question is {len(cleaned)} characters long; keep it under {MAX_QUESTION_CHARS}"
        )
    return cleaned
