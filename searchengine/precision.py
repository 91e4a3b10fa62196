"""Which image tower a collection embeds with: fp32, or int8 once it passed its check.

The int8 tower (``models.quantize``) makes different vectors, so a collection embeds
with one tower for its whole life, recorded in its catalog (``MetaKey.PRECISION``):
a collection built in int8 embeds new photos and example-image queries in int8, and
asking one collection for the other tower is refused, never mixed in silently.

A collection asks for int8 when it is first filled (``index --precision int8``). The
tower is then built and checked, once per model, on a sample of the collection's
own photos; if it fails, the collection is built in fp32 and the user is told why in
one line (``IndexReport.notes``). The check is recorded with the collection either
way, so asking again says the same thing instead of failing.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence

import numpy as np

from searchengine.errors import CollectionError, ImageError
from searchengine.ingest.decode import decode_file
from searchengine.ingest.exclude import Exclusions
from searchengine.ingest.scan import scan
from searchengine.models.base import Encoder
from searchengine.models.onnx import OnnxClipEncoder
from searchengine.models.quantize import SAMPLE, Verdict, prepare_int8, read_verdict
from searchengine.values import MetaKey

FP32, INT8 = "fp32", "int8"


def recorded(meta: Callable[[str], str | None]) -> tuple[str | None, Verdict | None]:
    """A collection's recorded precision and int8 check, from its catalog's meta rows."""
    raw = meta(MetaKey.PRECISION_CHECK)
    try:
        check = Verdict.from_dict(json.loads(raw)) if raw else None
    except (ValueError, KeyError, TypeError):
        check = None
    return meta(MetaKey.PRECISION), check


def refuse_mixing(
    name: str, stored: str | None, check: Verdict | None, has_vectors: bool, wanted: str | None
) -> None:
    """Raise if ``wanted`` would mix towers in a collection that already embeds with another.

    Asking for int8 again where it was refused is no mix: the collection goes on in fp32
    and ``settle`` says why once more.

    Raises:
        CollectionError: the collection's vectors came from the other tower.
    """
    current = stored or (FP32 if has_vectors else None)
    if wanted is None or current is None or wanted == current:
        return
    if wanted == INT8 and check is not None and not check.passed:
        return
    raise CollectionError(
        f"collection {name!r} holds {current} image vectors; {wanted} ones cannot be mixed "
        f"in. Leave out --precision to go on in {current}, or index into a new "
        f"collection (--collection NEW_NAME --precision {wanted})"
    )


def describe(check: Verdict) -> str:
    """What the int8 check found, for ``status``."""
    if check.passed:
        return f"int8 tower checked {check.summary()}"
    return f"int8 tower refused: {check.reason}; {check.summary()}"


def refusal(model: str, check: Verdict) -> str:
    """The one line a user reads when the int8 tower of ``model`` failed its check."""
    return (
        f"the int8 image tower of {model} was refused ({check.reason}; {check.summary()}); "
        "embedding in fp32"
    )


def settle(
    name: str,
    model: str,
    record: tuple[str | None, Verdict | None],
    wanted: str | None,
    encoder: Callable[[], Encoder],
    roots: Sequence[str],
    loaded: Encoder | None = None,
    exclusions: Exclusions | None = None,
) -> tuple[str, Verdict | None]:
    """The tower to embed with, checking the int8 one first where it is asked for.

    Args:
        name: the collection, for messages.
        model: its model spec, for messages.
        record: its recorded precision (None: new, or older than the record) and
            the int8 check recorded with it.
        wanted: what was asked for (None: the recorded one, else fp32).
        encoder: the collection's model in fp32, loaded if a check is needed.
        roots: the collection's folders: the check's sample is drawn from them.
        loaded: the model as already loaded, whatever its image tower: where its
            export has a stored verdict, that answers without loading ``encoder``.
        exclusions: what the collection leaves out of its folders (not sampled).

    Returns:
        The precision and, when int8 was asked for or is recorded, its check (where
        that check failed, ``refusal`` says so in one line).

    Raises:
        CollectionError: the collection holds int8 vectors but the tower, made again
            (a new export), failed its check this time.
    """
    stored, recorded_check = record
    if stored == FP32 and wanted == INT8 and recorded_check is not None:
        return FP32, recorded_check  # refused when the collection was built
    if stored != INT8 and (stored is not None or wanted != INT8):
        return stored or FP32, None
    found = read_verdict(loaded.folder) if isinstance(loaded, OnnxClipEncoder) else None
    check = found or _check(encoder(), roots, exclusions)
    if check.passed:
        return INT8, check
    if stored == INT8:
        raise CollectionError(
            f"collection {name!r} holds int8 image vectors, but the int8 tower of "
            f"{model} failed its check when made again: {check.reason}; index the "
            "photos into a new collection"
        )
    return FP32, check


def _check(model: Encoder, roots: Sequence[str], exclusions: Exclusions | None) -> Verdict:
    if not isinstance(model, OnnxClipEncoder):
        runs = f"{getattr(model, 'runtime', 'torch')} on {model.device}"
        return Verdict(False, 0, 0.0, 0.0, None, f"only ONNX Runtime runs it ({runs} here)")
    found = read_verdict(model.folder)
    if found is not None:
        return found
    return prepare_int8(model, sample_pixels(roots, model, exclusions=exclusions))


def sample_pixels(
    roots: Sequence[str],
    model: Encoder,
    size: int = SAMPLE,
    exclusions: Exclusions | None = None,
) -> np.ndarray:
    """Up to ``size`` photos under ``roots``, spread over the first few hundred files,
    decoded and preprocessed as ingest does; files that fail to decode are skipped."""
    entries = list(itertools.islice(scan(roots, exclusions=exclusions), 8 * size))
    step = max(1, len(entries) // (2 * size))
    pixels = []
    for entry in entries[::step]:
        try:
            image = decode_file(entry.path, min_side=model.image_size).image
        except ImageError:
            continue
        pixels.append(model.preprocess(image))
        if len(pixels) == size:
            break
    if not pixels:
        return np.zeros((0, 3, model.image_size, model.image_size), dtype=np.float32)
    return np.stack(pixels)
