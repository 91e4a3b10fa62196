"""Start-up overlap for one-shot commands: open a tower while the rest loads.

A cold ``searchengine search`` spends ~0.2 s importing the catalog's SQL layer and
FAISS and ~0.2 s opening the text tower in ONNX Runtime, which does that without
holding the GIL. On two or more cores the two overlap: ``TextWarmup`` starts
a thread that finds the collection's model and opens its text tower before the
catalog is opened. The command takes the encoder as soon as it is found, opens the
catalog and the index while the tower still opens, and hands the encoder to
``OneShot.open`` or ``Collection.open``, which refuse it if it is not the
collection's model.

The thread reads the model from the collection's SQLite catalog with the standard
library's driver (one row of its ``meta`` table), since SQLAlchemy is the import
being overlapped. Anything unusual (another database, a GPU, torch, no verified
ONNX export yet, an unreadable catalog) means no warm-up: the command then loads
the model as it always does, and says what is wrong if anything is.

``IngestWarmup`` does the same for the first ``searchengine index`` of a collection
with the image tower: the ~0.4 s of opening it then overlaps the SQL layer's import
and the catalog's creation, not the first photos' decoding, whose lanes would wait.
With ``--precision int8`` it opens the int8 tower, where that model's has already
passed its check; otherwise the check comes first, with the catalog open.

``ExampleWarmup`` does it for ``searchengine similar IMAGE``: it opens the image
tower, unless the example is an indexed photo (then its stored vector is the query).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from searchengine.config import CATALOG_FILE, Config, default_workers
from searchengine.values import MetaKey
from searchengine.writable import sqlite_reader

if TYPE_CHECKING:
    from searchengine.models.onnx import OnnxClipEncoder


def stored_model(catalog_file: Path) -> tuple[str, str] | None:
    """The model spec and image precision a SQLite catalog records, or None if it
    cannot be read."""
    keys = (MetaKey.MODEL, MetaKey.PRECISION)
    found = _read_catalog(catalog_file, "SELECT key, value FROM meta WHERE key IN (?, ?)", keys)
    rows = dict(found or [])
    model = rows.get(MetaKey.MODEL)
    return (str(model), str(rows.get(MetaKey.PRECISION) or "fp32")) if model else None


def _read_catalog(catalog_file: Path, query: str, params: tuple[str, ...]) -> list[Any] | None:
    """The rows ``query`` finds in a SQLite catalog, read-only with the standard
    library; None if there is no catalog or it cannot be read."""
    if not catalog_file.is_file():
        return None
    try:
        db = sqlite_reader(catalog_file, timeout=1)
        try:
            return db.execute(query, params).fetchall()
        finally:
            db.close()
    except sqlite3.Error:
        return None


def _onnx_on_cpu(config: Config) -> bool:
    """Whether the command may run its model in ONNX Runtime on this machine's CPU
    (a SQLite catalog on this host: the warm-up reads it with the standard library)."""
    from searchengine.models.onnx import cuda_possible

    if config.database_url is not None or config.runtime == "torch":
        return False
    # On a GPU torch decides; asking it costs more than the warm-up saves.
    return not (config.device == "cuda" or (config.device == "auto" and cuda_possible()))


def ready_query_encoder(config: Config, collection: str) -> OnnxClipEncoder | None:
    """``collection``'s encoder for one query, unopened, if it will run in ONNX Runtime."""
    from searchengine.errors import SearchEngineError
    from searchengine.models.onnx import ready_onnx_encoder
    from searchengine.models.spec import ModelKind, parse_model_spec

    if not _onnx_on_cpu(config):
        return None
    stored = stored_model(config.home / collection / CATALOG_FILE)
    if stored is None:
        return None
    try:
        parsed = parse_model_spec(stored[0])
    except SearchEngineError:
        return None
    if parsed.kind is ModelKind.TRANSFORMERS:
        return None
    return ready_onnx_encoder(parsed, precision=stored[1], one_shot=True)


def ready_image_encoder(
    config: Config, collection: str, model: str | None
) -> OnnxClipEncoder | None:
    """The encoder the first ingest of ``collection`` will embed with, if its image
    tower will run in ONNX Runtime; unopened.

    Only for a collection that has no catalog yet, where every photo found is to be
    embedded: a re-run may find nothing new, and then opens no tower at all (the
    ingest itself opens it once it has photos to embed). None too where another
    engine, database or runtime decides.
    """
    from searchengine.errors import SearchEngineError
    from searchengine.models.onnx import ready_onnx_encoder
    from searchengine.models.spec import ModelKind, parse_model_spec

    if not _onnx_on_cpu(config) or config.engine != "local":
        return None
    if (config.home / collection / CATALOG_FILE).exists():
        return None
    try:
        wanted = parse_model_spec(model or config.model)
    except SearchEngineError:
        return None  # the command says why
    if wanted.kind is ModelKind.TRANSFORMERS:
        return None
    # None as well for a precision it does not know: the command says why.
    encoder = ready_onnx_encoder(wanted, precision=config.precision or "fp32")
    if encoder is not None and encoder.precision == "int8" and not _int8_passed(encoder.folder):
        return None  # the tower is built and checked first, with the catalog open
    return encoder


def _int8_passed(folder: Path) -> bool:
    """Whether the int8 tower of the export in ``folder`` is built and passed its check."""
    from searchengine.models.quantize import read_verdict

    verdict = read_verdict(folder)
    return verdict is not None and verdict.passed


class Warmup:
    """Finds an encoder and warms it in a background thread, handing it over as soon as
    it is found: its calls wait for what is still opening (the encoder's locks).

    Any failure is left to the command, whose own load or first call meets it again
    and says why.
    """

    def __init__(
        self,
        name: str,
        find: Callable[[], OnnxClipEncoder | None],
        warm: Callable[[OnnxClipEncoder], None],
    ) -> None:
        self._encoder: OnnxClipEncoder | None = None
        self._found = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(find, warm), name=name, daemon=True)
        self._thread.start()

    def _run(
        self,
        find: Callable[[], OnnxClipEncoder | None],
        warm: Callable[[OnnxClipEncoder], None],
    ) -> None:
        try:
            self._encoder = find()
        except Exception:
            return
        finally:
            self._found.set()
        if self._encoder is None:
            return
        try:
            warm(self._encoder)
        except Exception:
            return

    def encoder(self) -> OnnxClipEncoder | None:
        """The encoder, as soon as it is found (a tower may still be opening); None if
        there is none to warm up."""
        self._found.wait()
        return self._encoder

    def result(self) -> OnnxClipEncoder | None:
        """The encoder once warmed; None if there is none to warm up."""
        self._thread.join()
        return self._encoder


class IngestWarmup(Warmup):
    """Finds the model a collection's first ingest embeds with and opens its image
    tower, with the threads the ingest's lanes will ask for."""

    def __init__(self, config: Config, collection: str, model: str | None) -> None:
        def warm(encoder: OnnxClipEncoder) -> None:
            encoder.image_lanes(config.workers or default_workers())
            encoder.warm_image()

        super().__init__(
            "image-warmup", lambda: ready_image_encoder(config, collection, model), warm
        )


class TextWarmup(Warmup):
    """Finds a collection's encoder and opens its text tower and tokenizer.

    The command opens the catalog and the index meanwhile; its first text call waits
    for the session, and builds the tokenizer itself if it gets there first.
    """

    def __init__(self, config: Config, collection: str) -> None:
        super().__init__(
            "text-warmup",
            lambda: ready_query_encoder(config, collection),
            lambda encoder: encoder.warm_text(),
        )


class ExampleWarmup(Warmup):
    """Finds a collection's encoder for ``similar IMAGE`` and opens its image tower,
    where the command will run it: for a region (but FALIP's, which runs the torch
    tower), or for a whole image that is not indexed (an indexed one is its stored
    vector)."""

    def __init__(
        self, config: Config, collection: str, image: Path, region_method: str | None
    ) -> None:
        def warm(encoder: OnnxClipEncoder) -> None:
            if region_method is None:
                if _indexed(config.home / collection / CATALOG_FILE, image):
                    return
            elif region_method == "falip":
                return
            encoder.warm_image()

        super().__init__("image-warmup", lambda: ready_query_encoder(config, collection), warm)


def _indexed(catalog_file: Path, image: Path) -> bool:
    """Whether ``image`` is an indexed photo of the SQLite catalog ``catalog_file``."""
    from searchengine.rows import path_key
    from searchengine.values import OK

    query = "SELECT status FROM images WHERE path_hash = ?"
    rows = _read_catalog(catalog_file, query, (path_key(os.path.abspath(image)),))
    return rows is not None and len(rows) > 0 and rows[0][0] == OK
