"""JPEG decode and preprocess as torch tensors, for ingest on a CUDA device.

With a GPU the model embeds thousands of images a second, and Pillow on the CPU cores
becomes the limit: even at 1/8 DCT scale a 12 MP JPEG costs ~25 ms of a core (entropy
decoding), about 40 a second per core. Here ``torchvision.io.decode_jpeg`` decodes a
batch on the device (nvJPEG), and orientation, resize, crop and normalisation follow
on the device too, with the model's own preprocess settings (open_clip's
``PreprocessCfg``) and antialiased resampling, so only compressed bytes cross the bus.

The same code runs on CPU tensors; that is how its agreement with the Pillow path is
tested where no GPU is present (``tests/unit/test_tensor_decode.py``). Files it cannot
decode go back to the Pillow path, which gives the same failures as any ingest.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, TypeGuard

from searchengine.errors import ImageError
from searchengine.ingest.capture import captured
from searchengine.ingest.decode import (
    MAX_PIXELS,
    ORIENTATION,
    check_pixels,
    open_image,
    taken_at_of,
)
from searchengine.models.base import Encoder, TensorEncoder
from searchengine.models.lite import Preprocess, resize_plan

JPEG_MAGIC = b"\xff\xd8\xff"


def tensor_decode_available(encoder: Encoder) -> TypeGuard[TensorEncoder]:
    """Whether ingest should decode JPEGs as tensors for ``encoder``: a torch model on
    CUDA (a ``TensorEncoder``) and a torchvision that decodes there."""
    if encoder.device != "cuda" or not isinstance(encoder, TensorEncoder):
        return False
    try:
        from torchvision.io import decode_jpeg  # noqa: F401
    except ImportError:
        return False
    return True


class JpegHeader:
    """What ingest records about a JPEG, read without decoding its pixels."""

    __slots__ = ("height", "orientation", "taken_at", "width")

    def __init__(self, width: int, height: int, orientation: int, taken_at: float | None):
        self.width = width  # upright
        self.height = height
        self.orientation = orientation
        self.taken_at = taken_at


def read_header(data: bytes, max_pixels: int = MAX_PIXELS) -> JpegHeader:
    """Size, EXIF orientation and date of a JPEG; refuses bombs as ``decode_bytes`` does.

    Raises:
        ImageError: not a JPEG Pillow can open, or over ``max_pixels``.
    """
    try:
        with captured():  # the Pillow decode that follows a failure says what went wrong
            image = open_image(data)
            if image.format != "JPEG":
                raise ImageError("not a JPEG")
            width, height = image.size
            check_pixels(width, height, max_pixels, "JPEG")
            orientation = int(image.getexif().get(ORIENTATION, 1) or 1)
            taken_at = taken_at_of(image)
    except ImageError:
        raise
    except Exception as exc:  # Pillow raises many kinds on a broken header
        raise ImageError(f"cannot read the JPEG header: {exc}") from exc
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return JpegHeader(width, height, orientation if 1 <= orientation <= 8 else 1, taken_at)


class TensorPreprocessor:
    """Decoded ``uint8`` CHW tensors into the model's normalised NCHW float batch."""

    def __init__(self, cfg: Preprocess, device: str) -> None:
        import torch

        self.cfg = cfg
        self.device = device
        self._torch = torch
        shape = (1, 3, 1, 1)
        self._mean = torch.tensor(cfg.mean, device=device).view(shape)
        self._std = torch.tensor(cfg.std, device=device).view(shape)

    def decode(self, datas: Sequence[bytes]) -> list[Any]:
        """JPEG bytes to RGB ``uint8`` CHW tensors on the device (nvJPEG on CUDA).

        Raises whatever torchvision raises for a file it cannot decode; the caller
        retries those one by one.
        """
        from torchvision.io import ImageReadMode, decode_jpeg

        torch = self._torch
        inputs = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
        with warnings.catch_warnings():
            # torchvision 0.29 deprecates its image codecs in favour of TorchCodec's;
            # they still work, and TorchCodec is the place to move when they go.
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision")
            if self.device == "cpu":
                return [decode_jpeg(t, mode=ImageReadMode.RGB) for t in inputs]
            return list(decode_jpeg(inputs, mode=ImageReadMode.RGB, device=self.device))

    def decode_each(self, datas: Sequence[bytes]) -> list[Any | None]:
        """``decode`` for a batch, then one by one if the batch fails; None = undecodable."""
        if not datas:
            return []
        try:
            return list(self.decode(datas))
        except Exception:  # one bad file fails the whole call: find which
            out: list[Any | None] = []
            for data in datas:
                try:
                    out.append(self.decode([data])[0])
                except Exception:
                    out.append(None)
            return out

    def __call__(self, images: Sequence[Any], orientations: Sequence[int]) -> Any:
        """Upright, resize, crop and normalise, as open_clip's eval transform does."""
        torch = self._torch
        out = [self._one(upright(image, o)) for image, o in zip(images, orientations, strict=True)]
        batch = torch.stack(out).float().div_(255.0)
        return (batch - self._mean) / self._std

    def _one(self, image: Any) -> Any:
        _, h, w = image.shape
        plan = resize_plan(w, h, self.cfg)
        resized = self._resize(image, (plan.height, plan.width), plan.interpolation)
        if plan.fill is None:
            return resized
        return _crop_or_pad(self._torch, resized, self.cfg.size, plan.fill)

    def _resize(self, image: Any, size: tuple[int, int], interpolation: str) -> Any:
        """Antialiased resampling to ``size`` (h, w), rounded to 8 bits as Pillow does."""
        import torch.nn.functional as F

        batch = image.unsqueeze(0).float()
        resized = F.interpolate(
            batch, size=size, mode=interpolation, antialias=True, align_corners=False
        )
        return resized.squeeze(0).round_().clamp_(0, 255).to(self._torch.uint8)


def upright(image: Any, orientation: int) -> Any:
    """A CHW tensor turned upright by its EXIF orientation (as ``ImageOps.exif_transpose``)."""
    import torch

    if orientation == 2:
        return image.flip(2)
    if orientation == 3:
        return image.flip(1).flip(2)
    if orientation == 4:
        return image.flip(1)
    if orientation == 5:
        return image.transpose(1, 2)
    if orientation == 6:
        return torch.rot90(image, -1, (1, 2))
    if orientation == 7:
        return image.flip(1).flip(2).transpose(1, 2)  # transverse
    if orientation == 8:
        return torch.rot90(image, 1, (1, 2))
    return image


def _crop_or_pad(torch: Any, image: Any, size: tuple[int, int], fill: int) -> Any:
    """torchvision's center crop: pad with ``fill`` when smaller, crop centred."""
    height, width = size
    _, h, w = image.shape
    if h < height or w < width:
        padded = torch.full((3, max(h, height), max(w, width)), fill, dtype=image.dtype,
                            device=image.device)  # fmt: skip
        top, left = (padded.shape[1] - h) // 2, (padded.shape[2] - w) // 2
        padded[:, top : top + h, left : left + w] = image
        image, h, w = padded, padded.shape[1], padded.shape[2]
    top = round((h - height) / 2.0)
    left = round((w - width) / 2.0)
    return image[:, top : top + height, left : left + width]
