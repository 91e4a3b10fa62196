"""searchengine: find photos by describing them.

Typical use::

    from searchengine import Collection

    with Collection.open("photos", create=True, model="ViT-B-32:openai") as photos:
        photos.index(["~/Pictures"])
        for hit in photos.search("kids building a sandcastle", k=5):
            print(hit.score, hit.path)
"""

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
from searchengine.collection import Collection, CollectionStatus, list_collections
from searchengine.config import Config
from searchengine.errors import (
    CollectionError,
    CollectionNotFoundError,
    ConfigError,
    ImageError,
    ModelError,
    ModelMismatchError,
    QueryError,
    SchemaVersionError,
    SearchEngineError,
    UnknownModelError,
    WeightsUnavailableError,
)
from searchengine.ingest.pipeline import IndexReport
from searchengine.models import Encoder, ModelSpec, load_encoder, parse_model_spec
from searchengine.search import SearchResult

__all__ = [
    "Answer",
    "Captioner",
    "Collection",
    "CollectionError",
    "CollectionNotFoundError",
    "CollectionStatus",
    "Config",
    "ConfigError",
    "Encoder",
    "FileCaption",
    "ImageError",
    "IndexReport",
    "ModelError",
    "ModelMismatchError",
    "ModelSpec",
    "QueryError",
    "QuestionAnswerer",
    "SchemaVersionError",
    "SearchEngineError",
    "SearchResult",
    "UnknownModelError",
    "WeightsUnavailableError",
    "answer_question",
    "caption_files",
    "list_collections",
    "load_answerer",
    "load_captioner",
    "load_encoder",
    "parse_model_spec",
]
