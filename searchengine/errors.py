"""Every error the library raises on purpose.

The CLI maps each of these to one clear line and a non-zero exit; library code
never calls ``sys.exit``. The hierarchy::

    SearchEngineError
    ├── ConfigError            bad option or environment value
    ├── ModelError
    │   ├── UnknownModelError  spec string names no loadable model
    │   └── WeightsUnavailableError  weights not cached and the hub unreachable
    ├── CollectionError
    │   ├── CollectionNotFoundError
    │   ├── CollectionLockedError  another process is indexing it
    │   ├── ModelMismatchError  a collection used with another model
    │   ├── CatalogUnavailableError  the catalog's database cannot be reached or used
    │   ├── ReadOnlyCollectionError  written to where this process may not write
    │   ├── NoSpaceError       the disk filled during a write (what was saved is kept)
    │   ├── DamagedIndexError  the vector index file cannot be read (``index`` rebuilds it)
    │   └── SchemaVersionError  catalog written by a newer release
    ├── ClusterError            Ray missing, or its cluster unreachable or failing
    ├── ImageError              one file cannot be used (recorded, never fatal to a run)
    ├── DatasetError            a benchmark dataset or captions file cannot be used
    └── QueryError              empty or unusable query
"""

from __future__ import annotations


class SearchEngineError(Exception):
    """Base class: every deliberate failure of the library."""


class ConfigError(SearchEngineError):
    """An option or environment variable has a value that cannot be used."""


class ModelError(SearchEngineError):
    """A model cannot be resolved or loaded."""


class UnknownModelError(ModelError):
    """The model spec string does not name a loadable model."""


class WeightsUnavailableError(ModelError):
    """Model weights are neither cached locally nor downloadable."""


class CollectionError(SearchEngineError):
    """A collection cannot be opened or used as asked."""


class CollectionNotFoundError(CollectionError):
    """No collection exists under the given name."""


class CollectionLockedError(CollectionError):
    """Another process holds the collection's write lock."""


class ModelMismatchError(CollectionError):
    """The collection was built with another model than the one asked for."""


class CatalogUnavailableError(CollectionError):
    """The catalog's database cannot be used: no driver, unreachable, refused, missing."""


class ReadOnlyCollectionError(CollectionError):
    """A collection this process may not write (read-only media, another user's) was
    asked to change; it can still be searched."""


class NoSpaceError(CollectionError):
    """A disk filled during a write; what was committed before it is kept."""


class DamagedIndexError(CollectionError):
    """A collection's vector index file cannot be read; ``index`` rebuilds it.

    Attributes:
        reason: what was found wrong with the file, in a few words.
    """

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


class SchemaVersionError(CollectionError):
    """The catalog was written by a newer release of searchengine."""


class ClusterError(SearchEngineError):
    """The Ray engine cannot run: Ray is not installed, or its cluster is unreachable."""


class ImageError(SearchEngineError):
    """One image file cannot be decoded or is refused (the reason is the message)."""


class DatasetError(SearchEngineError):
    """A benchmark dataset, captions, references or ratings file cannot be used."""


class QueryError(SearchEngineError):
    """A query cannot be run (empty text, unreadable example image, bad k)."""
