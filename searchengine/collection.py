"""A collection: one folder holding a catalog and a vector index for one model.

This is the composition root: ``Collection.open`` wires config, catalog, store and
(lazily) the encoder; every CLI command is one method call here, and each method
hands its work to the module that owns it (ingest, ranking, captions, the store).

On-disk layout (documented in ``indexes/README.md``)::

    <home>/<name>/catalog.sqlite   SQL catalog (unless a database URL is configured)
    <home>/<name>/catalog.json     where the catalog lives, when it is on a server
    <home>/<name>/vectors.faiss    FAISS index, ids = catalog image ids
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from searchengine.captions import Captioner
from searchengine.catalog import OK, Catalog, ImageRecord
from searchengine.collection_open import opened
from searchengine.collection_query import Searching
from searchengine.collection_status import CollectionStatus, collection_status
from searchengine.config import DEFAULT_COLLECTION, Config
from searchengine.errors import (
    CollectionError,
    CollectionLockedError,
    ConfigError,
    ReadOnlyCollectionError,
)
from searchengine.folders import (
    ForgetReport,
    forget,
    forgetting,
    spell_roots,
    twice_named,
)
from searchengine.index_choice import IndexPolicy
from searchengine.ingest.exclude import (
    parse_saved,
    saved_exclusions,
    saved_value,
    updated,
)
from searchengine.ingest.run import Ingest
from searchengine.ingest.write import IndexReport
from searchengine.models import Encoder, load_encoder
from searchengine.precision import FP32, INT8, recorded, refusal, settle
from searchengine.progress import Progress
from searchengine.ranking import (
    Calibration,
    calibrate,
)
from searchengine.ranking.calibration import needs_text_tower
from searchengine.store import INDEX_FILE, Store
from searchengine.values import MetaKey
from searchengine.vectors import FaissIndex
from searchengine.writable import space_for


class Collection(Searching):
    """A searchable set of images embedded with one model."""

    def __init__(
        self,
        name: str,
        folder: Path,
        catalog: Catalog,
        config: Config,
        encoder: Encoder | None = None,
    ) -> None:
        self.name = name
        self.folder = folder
        self.config = config
        self.store = Store(
            folder,
            catalog,
            name,
            default_dim=lambda: self.encoder.dim,
            policy=config.index_policy or IndexPolicy(),
        )
        self.model = catalog.get_meta(MetaKey.MODEL) or config.model
        stored, self.precision_check = recorded(catalog.get_meta)
        self.precision = stored or FP32  # settled at the first ingest (``_settle_precision``)
        self._encoder = encoder
        self._rerankers: dict[str, Encoder] = {}
        self._captioners: dict[str, Captioner] = {}
        self._calibration: tuple[object, Calibration | None] | None = None

    # -- opening ----------------------------------------------------------------
    @classmethod
    def open(
        cls,
        name: str = DEFAULT_COLLECTION,
        config: Config | None = None,
        *,
        create: bool = False,
        model: str | None = None,
        encoder: Encoder | None = None,
    ) -> Collection:
        """Open a collection (creating it when ``create`` is true).

        Args:
            name: collection name, a folder under ``config.home``.
            config: settings; ``Config.from_env()`` when omitted.
            create: create the collection if it does not exist.
            model: model spec to use; must match the collection's own, if it has one.
            encoder: an already-loaded encoder (tests, reuse across collections, or
                one warmed up while the catalog loaded); it must be the collection's model.

        Raises:
            CollectionNotFoundError: it does not exist and ``create`` is false.
            ModelMismatchError: ``model`` or ``encoder`` differs from the collection's model.
        """
        config = config or Config.from_env()
        folder, catalog, encoder = opened(name, config, create, model, encoder)
        return cls(name, folder, catalog, config, encoder)

    def close(self) -> None:
        for encoder in [self._encoder, *self._rerankers.values()]:
            if encoder is not None:
                encoder.close()
        for captioner in self._captioners.values():
            captioner.close()
        self.store.close()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- parts ----------------------------------------------------------------
    @property
    def encoder(self) -> Encoder:
        """The collection's model, loaded on first use."""
        if self._encoder is None:
            self._encoder = load_encoder(
                self.model, self.config.device, self.config.runtime, precision=self.precision
            )
        return self._encoder

    @property
    def catalog(self) -> Catalog:
        return self.store.catalog

    @property
    def index_path(self) -> Path:
        return self.store.index_path

    def vectors(self) -> FaissIndex:
        """The vector index (empty until the first ingest stores a dimension)."""
        return self.store.vectors()

    def reconcile(self) -> int:
        """Make the index agree with the catalog after an interrupted run (``Store``)."""
        return self.store.reconcile()

    # -- commands ---------------------------------------------------------------
    def index(
        self,
        paths: Iterable[str | Path] = (),
        progress: Progress | None = None,
        *,
        exclude: Iterable[str] = (),
        no_exclude: Iterable[str] = (),
        build_progress: Progress | None = None,
    ) -> IndexReport:
        """Embed new and changed images under ``paths`` (default: the known roots).

        Unchanged files are skipped by size and mtime, moved files keep their vector
        (recognised by content hash), deleted files leave catalog and index. A known
        folder that is gone or holds no image keeps its photos (an unplugged drive;
        ``ingest.plan.plan``), and ``report.notes`` names it.

        ``exclude`` adds patterns of what every walk of the collection's folders leaves
        out, from this run on, and ``no_exclude`` drops saved ones (``ingest.exclude``);
        indexed photos that the patterns now cover leave the collection
        (``report.excluded``), and the files stay where they are.

        ``build_progress`` counts the vectors of this host's index when it is built
        whole from a shared catalog before the run (``Store.writing``).
        """
        self.store.check_writable()
        saved = self.exclusions()
        patterns = updated(saved, exclude, no_exclude)
        roots = [os.path.abspath(p) for p in paths]
        for root in roots:
            if not os.path.lexists(root):  # a broken link named here gets a verdict
                raise CollectionError(f"no such file or folder: {root}")
        roots, notes = spell_roots(roots, self.catalog.roots() if roots else [])
        with space_for(self.folder, "collections"):
            self.catalog.add_roots(roots)
        if not roots:
            roots = self.catalog.roots()
            notes = twice_named(roots, self.folder)
        if not roots:
            raise CollectionError(
                f"collection {self.name!r} has no folders yet; name one: searchengine index PATH"
            )
        run = self._ingest(progress)  # an engine that cannot run says so before any work
        with space_for(self.folder, "collections"), self.store.writing(build_progress):
            if patterns != saved:
                self.catalog.set_meta({MetaKey.EXCLUDE: saved_value(patterns)})
            refused = self._settle_precision(roots)
            report = run.run(roots)
            report.precision = self.precision
            report.notes[:0] = [*notes, *self.store.repairs]
            report.notes.extend([refused] if refused else [])
            self._adapt()
            self._calibrate_after(report)
            return report

    def exclusions(self) -> list[str]:
        """The patterns every walk of the collection's folders leaves out."""
        return parse_saved(self.catalog.get_meta(MetaKey.EXCLUDE))

    def _ingest(self, progress: Progress | None) -> Ingest:
        """The ingest engine the config asks for: this process, or a Ray cluster."""
        config = self.config
        common: dict[str, Any] = {
            "batch_size": config.batch_size,
            "workers": config.workers,
            "progress": progress,
            "checkpoint_seconds": config.checkpoint_seconds,
            "load_seconds": config.load_seconds,
            "adapt": self._adapt,
        }
        if config.engine == "ray":
            if INT8 in (config.precision, self.precision):
                raise ConfigError(
                    "the int8 image tower embeds in this process only; index this "
                    "collection with --engine local"
                )
            from searchengine.ingest.ray_run import RayIngest

            return RayIngest(
                self.store,
                self._encoder_for_ingest,
                spec=self.model,
                address=config.ray_address,
                device=config.device,
                runtime=config.runtime,
                **common,
            )
        if config.engine != "local":
            raise ConfigError(f"unknown engine {config.engine!r}; use one of: local, ray")
        # The calibration right after a run that changes the index needs the text tower.
        return Ingest(self.store, self._encoder_for_ingest, text_after=needs_text_tower, **common)

    def _adapt(self) -> None:
        self.store.adapt(self.store.policy, self.config.index_memory_mb)

    def update(self, progress: Progress | None = None) -> IndexReport:
        """Bring the collection up to date with its folders before a search.

        ``index()`` of the known folders, as ``search --refresh`` runs it, so adding
        photos and searching them is one command. When another process is indexing
        the collection, nothing is done here and the report says so in ``notes``:
        the search then sees what that process has saved so far.
        """
        try:
            return self.index(progress=progress)
        except (CollectionLockedError, ReadOnlyCollectionError) as exc:
            return IndexReport(notes=[f"not refreshed: {exc}"])

    def forgetting(self, folder: str | Path) -> ForgetReport:
        """What ``forget(folder)`` would take out of the collection; nothing is written."""
        return forgetting(self.catalog, self.name, os.path.abspath(folder))

    def forget(self, folder: str | Path) -> ForgetReport:
        """Take a folder and its photos out of the collection (the files stay on disk).

        Their rows, vectors and cached captions go as a deleted file's do, and
        ``index`` with no paths no longer walks the folder. See ``folders.forget``.
        """
        with space_for(self.folder, "collections"), self.store.writing():
            report = forget(self.store, os.path.abspath(folder))
            self._adapt()
            self._calibrate_after(IndexReport(removed=report.images))
            return report

    def _settle_precision(self, roots: Sequence[str]) -> str | None:
        """Decide (once) which image tower this collection embeds with, and record it.

        Returns the one line saying why, where int8 was asked for and refused.
        """
        stored, previous = recorded(self.catalog.get_meta)
        precision, check = settle(
            self.name,
            self.model,
            (stored, previous),
            self.config.precision,
            self._fp32_encoder,
            roots,
            self._encoder,  # an int8 one when opened early (``warmup.IngestWarmup``)
            saved_exclusions(self.catalog.get_meta),
        )
        if precision != stored or (check is not None and check != self.precision_check):
            self.store.record_precision(precision, check.to_dict() if check else None)
            self.precision_check = check
        if self._encoder_precision() not in (None, precision):
            assert self._encoder is not None
            self._encoder.close()
            self._encoder = None
        self.precision = precision
        wanted_int8 = self.config.precision == INT8 or stored == INT8
        if wanted_int8 and precision == FP32 and check is not None:
            return refusal(self.model, check)
        return None

    def _fp32_encoder(self) -> Encoder:
        """The model with its fp32 image tower (what the int8 one is checked against)."""
        if self._encoder_precision() == FP32:
            assert self._encoder is not None
            return self._encoder
        if self._encoder is not None:
            self._encoder.close()
        self._encoder = load_encoder(self.model, self.config.device, self.config.runtime)
        return self._encoder

    def _encoder_precision(self) -> str | None:
        """The image tower of the loaded encoder; None when none is loaded."""
        if self._encoder is None:
            return None
        return str(getattr(self._encoder, "precision", FP32))

    def _calibrate_after(self, report: IndexReport) -> None:
        """Store the weak-match line when the run changed the index, or none fits."""
        changed = report.added + report.updated + report.moved + report.removed + report.excluded
        # "" records a collection too small to calibrate; a method or model other than
        # the current ones is stale.
        raw = self.catalog.get_meta(MetaKey.CALIBRATION)
        stored = Calibration.from_json(raw)
        stale = raw is None or (raw != "" and (stored is None or stored.model != self.model))
        if changed or stale:
            self._store_calibration()

    def _store_calibration(self) -> None:
        if not self.index_path.exists():
            return
        measured = calibrate(self.vectors(), self.encoder)
        self.catalog.set_meta({MetaKey.CALIBRATION: measured.to_json() if measured else ""})
        self._calibration = None

    def calibration(self) -> Calibration | None:
        """What a real match scores in this collection (``ranking.calibration``).

        The one stored by the last ingest, when it was measured on the index as it is
        now; otherwise measured now and kept for as long as the index is unchanged
        (a reader, such as the web server, never writes the catalog).
        """
        index = self.vectors()
        key = (id(index), len(index))
        if self._calibration is not None and self._calibration[0] == key:
            return self._calibration[1]
        stored = Calibration.from_json(self.catalog.get_meta(MetaKey.CALIBRATION))
        if stored is None or not stored.fits(self.model, len(index)):
            stored = calibrate(index, self.encoder)
        self._calibration = (key, stored)
        return stored

    def _encoder_for_ingest(self) -> Encoder:
        encoder = self.encoder
        self.store.claim_dim(encoder.dim, encoder.spec)
        return encoder

    def status(self) -> CollectionStatus:
        """What the collection holds: counts, model, index, sizes, where the catalog is."""
        with self.store.reading():
            return collection_status(self)

    def failures(self) -> list[ImageRecord]:
        """Files that could not be indexed, with the reason for each."""
        return [r for r in self.catalog.records() if r.status != OK]

    def warnings(self) -> list[ImageRecord]:
        """Files indexed whose decoder had something to say, with what it said."""
        return [r for r in self.catalog.records(OK) if r.error is not None]


__all__ = ["INDEX_FILE", "Collection", "CollectionStatus"]
