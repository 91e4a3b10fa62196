"""searchengine: find photos by describing them.

Typical use::

    from searchengine import Collection

    with Collection.open("photos", create=True, model="ViT-B-32:openai") as photos:
        photos.index(["~/Pictures"])
        for hit in photos.search("kids building a sandcastle", k=5):
            print(hit.score, hit.path)

The names below are imported on first use, so a command that needs only part of
the package (``searchengine search`` opening its text tower while the catalog's
SQL layer loads, ``--help``) does not pay for all of it at start-up.
"""

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from searchengine.captions import (
        Answer,
        Captioner,
        FileCaption,
        QuestionAnswerer,
        answer_question,
        caption_files,
        load_answerer,
        load_captioner,
    )
    from searchengine.collection import Collection, CollectionStatus
    from searchengine.config import Config
    from searchengine.errors import (
        CollectionError,
        CollectionLockedError,
        CollectionNotFoundError,
        ConfigError,
        ImageError,
        ModelError,
        ModelMismatchError,
        NoSpaceError,
        QueryError,
        ReadOnlyCollectionError,
        SchemaVersionError,
        SearchEngineError,
        UnknownModelError,
        WeightsUnavailableError,
    )
    from searchengine.folders import ForgetReport
    from searchengine.home import (
        CollectionSummary,
        collection_summaries,
        list_collections,
        remove_collection,
    )
    from searchengine.ingest.write import IndexReport
    from searchengine.models import Encoder, ModelSpec, load_encoder, parse_model_spec
    from searchengine.models.clipseg import ClipSeg
    from searchengine.ranking import SearchResult
    from searchengine.region import region_vectors
    from searchengine.where import Location, locate

_EXPORTS = {
    "Answer": "searchengine.captions",
    "Captioner": "searchengine.captions",
    "ClipSeg": "searchengine.models.clipseg",
    "Collection": "searchengine.collection",
    "CollectionError": "searchengine.errors",
    "CollectionLockedError": "searchengine.errors",
    "CollectionNotFoundError": "searchengine.errors",
    "CollectionStatus": "searchengine.collection",
    "CollectionSummary": "searchengine.home",
    "Config": "searchengine.config",
    "ConfigError": "searchengine.errors",
    "Encoder": "searchengine.models",
    "FileCaption": "searchengine.captions",
    "ForgetReport": "searchengine.folders",
    "ImageError": "searchengine.errors",
    "IndexReport": "searchengine.ingest.write",
    "Location": "searchengine.where",
    "ModelError": "searchengine.errors",
    "ModelMismatchError": "searchengine.errors",
    "ModelSpec": "searchengine.models",
    "NoSpaceError": "searchengine.errors",
    "QueryError": "searchengine.errors",
    "QuestionAnswerer": "searchengine.captions",
    "ReadOnlyCollectionError": "searchengine.errors",
    "SchemaVersionError": "searchengine.errors",
    "SearchEngineError": "searchengine.errors",
    "SearchResult": "searchengine.ranking",
    "UnknownModelError": "searchengine.errors",
    "WeightsUnavailableError": "searchengine.errors",
    "answer_question": "searchengine.captions",
    "caption_files": "searchengine.captions",
    "collection_summaries": "searchengine.home",
    "list_collections": "searchengine.home",
    "load_answerer": "searchengine.captions",
    "load_captioner": "searchengine.captions",
    "load_encoder": "searchengine.models",
    "locate": "searchengine.where",
    "parse_model_spec": "searchengine.models",
    "region_vectors": "searchengine.region",
    "remove_collection": "searchengine.home",
}
__all__ = [
    "Answer",
    "Captioner",
    "ClipSeg",
    "Collection",
    "CollectionError",
    "CollectionLockedError",
    "CollectionNotFoundError",
    "CollectionStatus",
    "CollectionSummary",
    "Config",
    "ConfigError",
    "Encoder",
    "FileCaption",
    "ForgetReport",
    "ImageError",
    "IndexReport",
    "Location",
    "ModelError",
    "ModelMismatchError",
    "ModelSpec",
    "NoSpaceError",
    "QueryError",
    "QuestionAnswerer",
    "ReadOnlyCollectionError",
    "SchemaVersionError",
    "SearchEngineError",
    "SearchResult",
    "UnknownModelError",
    "WeightsUnavailableError",
    "answer_question",
    "caption_files",
    "collection_summaries",
    "list_collections",
    "load_answerer",
    "load_captioner",
    "load_encoder",
    "locate",
    "parse_model_spec",
    "region_vectors",
    "remove_collection",
]


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'searchengine' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
