"""A collection: one folder holding a catalog and a vector index for one model.

This is the composition root: ``Collection.open`` wires config, catalog, vector
index and (lazily) the encoder; every CLI command is one method call here.

On-disk layout (documented in ``indexes/README.md``)::

    <home>/<name>/catalog.sqlite   SQL catalog (unless a database URL is configured)
    <home>/<name>/vectors.faiss    FAISS IndexIDMap2, ids = catalog image ids
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from searchengine import index_choice
from searchengine.captions import Captioner, cached_captions, load_captioner
from searchengine.catalog import (
    OK,
    SCHEMA_VERSION,
    Catalog,
    ImageRecord,
    delete_images,
    pending_vectors,
    trim_vector_log,
    write_meta,
)
from searchengine.config import CATALOG_FILE, DEFAULT_COLLECTION, Config
from searchengine.errors import (
    CollectionError,
    CollectionNotFoundError,
    ImageError,
    ModelMismatchError,
    QueryError,
)
from searchengine.filters import SORTS, Filters, matching_ids
from searchengine.ingest.decode import decode_file, decode_size
from searchengine.ingest.pipeline import IndexReport, Ingest, NoProgress, Progress
from searchengine.lock import WriteLock
from searchengine.models import Encoder, load_encoder, parse_model_spec
from searchengine.models.blip import DEFAULT_CAPTION_MODEL, parse_blip_model
from searchengine.query import build_terms, embed_forms, embed_terms
from searchengine.rerank import ImageVectors, clip_scores
from searchengine.search import SearchResult, check_k, rank
from searchengine.vectors import EXACT, FaissIndex

INDEX_FILE = "vectors.faiss"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class CollectionStatus:
    """What ``searchengine status`` shows."""

    name: str
    folder: str
    model: str
    dim: int | None
    index_type: str
    images: int
    failed: int
    vectors: int
    size_bytes: int
    roots: list[str]
    schema_version: int
    accelerator: str | None = None  # fast-scan index that answers queries first, if any

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


class Collection:
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
        self.catalog = catalog
        self.config = config
        self.model = catalog.get_meta("model") or config.model
        self._encoder = encoder
        self._index: FaissIndex | None = None
        self._rerankers: dict[str, Encoder] = {}
        self._captioners: dict[str, Captioner] = {}

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
        if not _NAME_RE.match(name):
            raise CollectionError(
                f"invalid collection name {name!r}: use letters, digits, '.', '_' or '-'"
            )
        folder = config.home / name
        exists = (folder / CATALOG_FILE).exists() or (
            config.database_url is not None and folder.exists()
        )
        if not exists and not create:
            raise CollectionNotFoundError(
                f"no collection {name!r} in {config.home.resolve()}; create it with "
                f"`searchengine index PATH --collection {name}`, or point --index-dir / "
                "SEARCHENGINE_HOME at the folder that holds it"
            )
        folder.mkdir(parents=True, exist_ok=True)
        url = config.database_url or f"sqlite:///{(folder / CATALOG_FILE).resolve()}"
        catalog = Catalog(url)
        stored = catalog.get_meta("model")
        if model is not None:
            wanted = parse_model_spec(model).spec
        else:  # an injected encoder names itself; its spec need not be loadable
            wanted = encoder.spec if encoder else parse_model_spec(config.model).spec
        if stored is None:
            catalog.set_meta({"model": wanted, "name": name, "index_type": EXACT})
        elif model is not None and parse_model_spec(model).spec != stored:
            catalog.close()
            raise ModelMismatchError(
                f"collection {name!r} was built with {stored}, not {model}; leave out --model "
                f"to use {stored}, or index into a new collection (--collection NEW_NAME)"
            )
        if stored is not None and encoder is not None and encoder.spec != stored:
            catalog.close()
            raise ModelMismatchError(
                f"collection {name!r} was built with {stored}; the encoder given is "
                f"{encoder.spec}. Pass an encoder of {stored}, or none to load it"
            )
        return cls(name, folder, catalog, config, encoder)

    def close(self) -> None:
        for encoder in [self._encoder, *self._rerankers.values()]:
            if encoder is not None:
                encoder.close()
        for captioner in self._captioners.values():
            captioner.close()
        self.catalog.close()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- parts ----------------------------------------------------------------
    @property
    def encoder(self) -> Encoder:
        """The collection's model, loaded on first use."""
        if self._encoder is None:
            self._encoder = load_encoder(self.model, self.config.device, self.config.runtime)
        return self._encoder

    @property
    def index_path(self) -> Path:
        return self.folder / INDEX_FILE

    def vectors(self) -> FaissIndex:
        """The vector index (empty until the first ingest stores a dimension)."""
        if self._index is None:
            if self.index_path.exists():
                self._index = FaissIndex.load(self.index_path)
            else:  # nothing saved yet: exact until ``_adapt_index`` says otherwise
                dim = self.catalog.get_meta("dim")
                self._index = FaissIndex(int(dim) if dim else self.encoder.dim)
        return self._index

    def _index_type(self) -> str:
        # The saved file is the truth (a crash may fall between saving a rebuilt
        # index and recording its type); the catalog's note serves before it exists.
        if self._index is not None or self.index_path.exists():
            return self.vectors().index_type
        return self.catalog.get_meta("index_type") or EXACT

    def _adapt_index(self) -> None:
        """Rebuild the index as the type its size (and memory budget) now calls for.

        Runs at the end of an ingest, under the write lock. The rebuilt index holds
        the same ids and vectors, so it is saved like a checkpoint of the last batch.
        """
        wanted = index_choice.wanted_type(self.vectors(), self.config.index_memory_mb)
        if wanted is None:
            return
        rebuilt, report = index_choice.build_index(
            self.vectors(), wanted, memory_mb=self.config.index_memory_mb
        )
        self._index = rebuilt
        self._save_index(int(self.catalog.get_meta("last_batch") or 0))
        self.catalog.set_meta(
            {"index_type": rebuilt.index_type, "index_params": json.dumps(report.to_dict())}
        )

    # -- commands ---------------------------------------------------------------
    def index(
        self, paths: Iterable[str | Path] = (), progress: Progress | None = None
    ) -> IndexReport:
        """Embed new and changed images under ``paths`` (default: the known roots).

        Unchanged files are skipped by size and mtime, moved files keep their vector
        (recognised by content hash), deleted files leave catalog and index.
        """
        roots = [os.path.abspath(p) for p in paths]
        for root in roots:
            if not os.path.exists(root):
                raise CollectionError(f"no such file or folder: {root}")
        self.catalog.add_roots(roots)
        roots = roots or self.catalog.roots()
        if not roots:
            raise CollectionError(
                f"collection {self.name!r} has no folders yet; name one: searchengine index PATH"
            )
        with WriteLock(self.folder, self.name):
            self._index = None  # another process may have written it since we loaded it
            for stale in self.folder.glob(f"{INDEX_FILE}.*.tmp"):
                stale.unlink(missing_ok=True)  # left by a writer killed mid-save
            self.reconcile()
            run = Ingest(
                self.catalog,
                self.vectors,
                self._encoder_for_ingest,
                self._save_index,
                batch_size=self.config.batch_size,
                workers=self.config.workers or default_workers(),
                progress=progress,
                checkpoint_seconds=self.config.checkpoint_seconds,
            )
            report = run.run(roots)
            # Unloaded means nothing changed; a memory budget may still ask for another type.
            if self._index is not None or self.config.index_memory_mb is not None:
                self._adapt_index()
            return report

    def precompute(self, model: str | Encoder, progress: Progress | None = None) -> int:
        """Compute and cache another model's vectors for every indexed image.

        Later ``search(..., rerank=model)`` calls then decode nothing. Images whose
        vectors are cached already are skipped. Returns how many were computed.
        """
        scorer = self._scorer(model)
        if scorer.index is not None:
            return 0  # the collection's own model: its vectors are the index
        records = list(self.catalog.records(OK))
        progress = progress or NoProgress()
        progress.start(len(records))
        chunk = 256
        try:
            for start in range(0, len(records), chunk):
                part = records[start : start + chunk]
                scorer.get(part)
                progress.advance(len(part))
        finally:
            progress.close()
        return scorer.decoded

    def _encoder_for_ingest(self) -> Encoder:
        encoder = self.encoder
        stored = self.catalog.get_meta("dim")
        if stored is None:
            self.catalog.set_meta({"dim": str(encoder.dim)})
        elif int(stored) != encoder.dim:
            raise ModelMismatchError(
                f"collection {self.name!r} stores {stored}-d vectors but {encoder.spec} "
                f"makes {encoder.dim}-d ones; use a new collection for this model"
            )
        return encoder

    def _save_index(self, batch_no: int) -> None:
        if self._index is None:
            return
        # Order matters: the file first, then the marker of what it contains, then
        # the log trimmed. A crash between any two steps leaves a state that
        # ``reconcile`` repairs without re-embedding.
        self._index.save(self.index_path)
        with self.catalog.transaction() as conn:
            write_meta(conn, "index_batch", str(batch_no))
            write_meta(conn, "index_vectors", str(len(self._index)))
            trim_vector_log(conn, batch_no)

    def reconcile(self) -> int:
        """Make the index agree with the catalog after an interrupted run.

        The catalog is the commit point: vectors of batches committed after the
        index file was last saved are replayed from the catalog's vector log, and
        index ids without an ok catalog row are removed. Returns the ids fixed.
        """
        saved = int(self.catalog.get_meta("index_batch") or 0)
        if self._consistent(saved):
            return 0
        index = self.vectors()
        with self.catalog.transaction() as conn:
            replay = pending_vectors(conn, saved)
        ok = self.catalog.ok_ids()
        replay = {i: v for i, v in replay.items() if i in ok}
        orphans = [int(i) for i in index.ids() if int(i) not in ok]
        index.remove(np.asarray(orphans + list(replay), dtype=np.int64))
        if replay:
            index.add(np.asarray(list(replay), dtype=np.int64), np.stack(list(replay.values())))
        missing = ok - set(int(i) for i in index.ids())
        if missing:  # no vector anywhere (cannot happen unless files were edited by hand)
            with self.catalog.transaction() as conn:
                delete_images(conn, sorted(missing))
        fixed = len(replay) + len(orphans) + len(missing)
        last = int(self.catalog.get_meta("last_batch") or saved)
        if fixed:
            self._save_index(last)
        else:  # the saved index is right as it is: say so, for the next run's check
            with self.catalog.transaction() as conn:
                write_meta(conn, "index_batch", str(last))
                write_meta(conn, "index_vectors", str(len(index)))
        return fixed

    def _consistent(self, saved: int) -> bool:
        """Whether the saved index holds exactly the catalog's vectors, from metadata.

        Every catalog change to images bumps ``last_batch``; every index save records
        the batch and the vector count. Equal batches and counts mean the last run
        ended cleanly, and an unchanged re-run need not load the index at all.
        """
        if self._index is not None or not self.index_path.exists():
            return False
        last = int(self.catalog.get_meta("last_batch") or 0)
        count = self.catalog.get_meta("index_vectors")
        return saved == last and count is not None and int(count) == self.catalog.ok_count()

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        plus: Sequence[str] = (),
        minus: Sequence[str] = (),
        rerank: str | bool | Encoder | None = None,
        candidates: int | None = None,
        min_score: float | None = None,
        filters: Filters | None = None,
        sort: str = "relevance",
        caption: str | bool | Captioner | None = None,
    ) -> list[SearchResult]:
        """Images best matching a query, best first.

        Args:
            query: what the photo shows, in words.
            k: how many results.
            plus: more terms to add: text, or paths of example images; ``W:term``
                weights a term.
            minus: terms to subtract, in the same form.
            rerank: rescore the candidates with CLIPScore and rank by it; ``True``
                uses the collection's own model, a spec string (or a loaded
                encoder) another model.
            candidates: first-stage candidates to rescore (default ``max(100, k)``
                when reranking or thresholding, else ``k``).
            min_score: drop results whose CLIPScore is below this.
            filters: metadata filters, applied inside the vector search.
            sort: ``relevance``, ``date`` (newest first) or ``date-asc``.
            caption: caption the results (see ``caption``): ``True`` with BLIP's
                default captioning model, a model name, or a loaded captioner.

        Every result carries the first-stage cosine and the CLIPScore.
        """
        check_k(k)
        if sort not in SORTS:
            raise QueryError(f"unknown sort {sort!r}; use one of {', '.join(SORTS)}")
        terms = build_terms(query, plus, minus)
        index = self.vectors()
        allowed = matching_ids(self.catalog, filters) if filters and filters.active else None
        if len(index) == 0:
            return []
        rescoring = bool(rerank) or min_score is not None
        pool = candidates or (max(100, k) if rescoring else k)
        scorer = self._scorer(rerank)
        if scorer.encoder is self.encoder:  # one text batch for both forms of the query
            query_vector, score_vector = embed_forms(terms, self.encoder, (False, True))
        else:
            query_vector = embed_terms(terms, self.encoder)
            score_vector = embed_terms(terms, scorer.encoder, clipscore=True)
        first = rank(index, self.catalog, query_vector, max(pool, k), allowed=allowed)
        records = list(self.catalog.get([r.id for r in first]).values())
        by_id = {r.id: r for r in records}
        vectors = scorer.get([by_id[r.id] for r in first])
        scores = clip_scores(vectors, score_vector)
        results = [
            replace(r, clip_score=float(s), score=float(s) if rerank else r.score)
            for r, s in zip(first, scores, strict=True)
        ]
        if rerank:
            results.sort(key=lambda r: (-r.score, -r.cosine))
        if min_score is not None:
            results = [r for r in results if (r.clip_score or 0.0) >= min_score]
        results = results[:k]
        if sort != "relevance":
            results.sort(key=lambda r: _date(r, by_id), reverse=(sort == "date"))
        if caption:
            texts = self.caption(results, model=None if caption is True else caption)
            results = [replace(r, caption=texts.get(r.id)) for r in results]
        return results

    def caption(
        self,
        images: Sequence[SearchResult | int],
        model: str | Captioner | None = None,
    ) -> dict[int, str]:
        """Captions of indexed images by id, made once per (image, model) and stored.

        Args:
            images: search results or catalog image ids.
            model: a BLIP captioning repo id or folder (default
                ``Salesforce/blip-image-captioning-base``), or a loaded captioner.

        A stored caption is reused until the file's content changes (and is
        re-indexed). Ids not in the catalog, and files that can no longer be read,
        get no caption.
        """
        ids = [r.id if isinstance(r, SearchResult) else int(r) for r in images]
        records = self.catalog.get(ids)
        found = [records[i] for i in dict.fromkeys(ids) if i in records]
        return cached_captions(self.catalog, found, self._captioner(model))

    def _captioner(self, model: str | Captioner | None) -> Captioner:
        if model is not None and not isinstance(model, str):
            return model
        name = parse_blip_model(model or DEFAULT_CAPTION_MODEL).spec
        if name not in self._captioners:
            self._captioners[name] = load_captioner(name, self.config.device)
        return self._captioners[name]

    def _scorer(self, rerank: str | bool | Encoder | None) -> ImageVectors:
        """Where CLIPScore's image vectors come from: our index, or a cached model."""
        if isinstance(rerank, Encoder) and rerank.spec != self.model:
            return ImageVectors(self.catalog, rerank)
        spec = rerank if isinstance(rerank, str) else None
        if spec is None or parse_model_spec(spec).spec == self.model:
            return ImageVectors(self.catalog, self.encoder, index=self.vectors())
        canonical = parse_model_spec(spec).spec
        if canonical not in self._rerankers:
            self._rerankers[canonical] = load_encoder(
                canonical, self.config.device, self.config.runtime
            )
        return ImageVectors(self.catalog, self._rerankers[canonical])

    def similar(
        self,
        image: str | Path | Image.Image,
        k: int = 10,
        *,
        region: tuple[int, int, int, int] | None = None,
        region_method: str = "falip",
    ) -> list[SearchResult]:
        """Images most like an example image (indexed or not); the image itself excluded.

        With ``region`` (``x0, y0, x1, y1`` in the upright image's pixels), images most
        like that part of it: the query is the region's embedding
        (:func:`searchengine.region.region_vectors`, FALIP by default).
        """
        check_k(k)
        index = self.vectors()
        exclude: set[int] = set()
        vector = None
        full = image.size if isinstance(image, Image.Image) else None
        if not isinstance(image, Image.Image):
            path = os.path.abspath(image)
            record = self.catalog.by_path(path)
            if record is not None and record.status == OK:
                exclude.add(record.id)
                vector = index.reconstruct(record.id) if region is None else None
            if vector is None:
                try:
                    size = decode_size(self.encoder.image_size)
                    decoded = decode_file(path, min_side=size)
                except ImageError as exc:
                    raise QueryError(f"cannot use {path} as an example image: {exc}") from exc
                image, full = decoded.image, (decoded.width, decoded.height)
        if vector is None:
            assert isinstance(image, Image.Image)
            if region is None:
                vector = self.encoder.encode_images([image])[0]
            else:
                vector = self._region_vector(image, full or image.size, region, region_method)
        if len(index) == 0:
            return []
        return rank(index, self.catalog, vector, k, exclude)

    def _region_vector(
        self,
        image: Image.Image,
        full: tuple[int, int],
        region: tuple[int, int, int, int],
        method: str,
    ) -> np.ndarray:
        """The region (in full-size pixels) embedded from a possibly reduced decode."""
        from searchengine.region import clip_box, region_vectors

        x0, y0, x1, y1 = clip_box(region, full)
        fx, fy = image.width / full[0], image.height / full[1]
        box = (round(x0 * fx), round(y0 * fy), max(round(x1 * fx), 1), max(round(y1 * fy), 1))
        return region_vectors(self.encoder, image, [box], method)[0]

    def status(self) -> CollectionStatus:
        counts = self.catalog.counts()
        size = sum(p.stat().st_size for p in self.folder.iterdir() if p.is_file())
        index = self.vectors() if self.index_path.exists() else None
        dim = self.catalog.get_meta("dim")
        return CollectionStatus(
            name=self.name,
            folder=str(self.folder.resolve()),
            model=self.model,
            dim=int(dim) if dim else None,
            index_type=self._index_type(),
            images=counts.get(OK, 0),
            failed=sum(n for s, n in counts.items() if s != OK),
            vectors=0 if index is None else len(index),
            size_bytes=size,
            roots=self.catalog.roots(),
            schema_version=int(self.catalog.get_meta("schema_version") or SCHEMA_VERSION),
            accelerator=None if index is None else index.accelerator,
        )

    def failures(self) -> list[ImageRecord]:
        """Files that could not be indexed, with the reason for each."""
        return [r for r in self.catalog.records() if r.status != OK]


def _date(result: SearchResult, records: dict[int, ImageRecord]) -> float:
    """EXIF date, else file modification time (as the date filters use)."""
    if result.taken_at is not None:
        return result.taken_at
    return records[result.id].mtime_ns / 1e9


def list_collections(config: Config) -> Sequence[str]:
    home = config.home
    if not home.is_dir():
        return []
    return sorted(p.name for p in home.iterdir() if (p / CATALOG_FILE).exists())
