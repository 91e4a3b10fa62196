"""Values shared by the CLI, the HTTP API and the library, defined once.

The ``Literal`` types are what the API's schema and the type checker see; the tuples
are what click's choices and the library's checks use. Both come from one list.
"""

from __future__ import annotations

from typing import Literal, get_args

Device = Literal["auto", "cpu", "cuda"]
Runtime = Literal["auto", "torch", "onnx"]
Precision = Literal["fp32", "int8"]  # of the image tower a collection embeds with
Sort = Literal["relevance", "date", "date-asc"]
Orientation = Literal["landscape", "portrait", "square"]
Engine = Literal["local", "ray"]  # where ingest loads and embeds: this process, or Ray

DEVICES: tuple[str, ...] = get_args(Device)
RUNTIMES: tuple[str, ...] = get_args(Runtime)
PRECISIONS: tuple[str, ...] = get_args(Precision)
SORTS: tuple[str, ...] = get_args(Sort)
ORIENTATIONS: tuple[str, ...] = get_args(Orientation)
ENGINES: tuple[str, ...] = get_args(Engine)


# What became of a file: indexed, or failed with a reason (the catalog's ``status``).
OK = "ok"
FAILED = "failed"


class MetaKey:
    """Names of the catalog's ``meta`` rows: the collection's identity and its
    crash-recovery bookkeeping (read and written by ``searchengine.store`` only,
    and by the start-up warm-up, which reads the model without the SQL layer)."""

    SCHEMA_VERSION = "schema_version"
    NAME = "name"
    MODEL = "model"
    DIM = "dim"
    INDEX_TYPE = "index_type"
    PRECISION = "image_precision"  # fp32 or int8: the image tower the vectors came from
    PRECISION_CHECK = "image_precision_check"  # the int8 tower's check, when asked (JSON)
    INDEX_PARAMS = "index_params"  # how the index was built and tuned (JSON)
    LAST_BATCH = "last_batch"  # the newest ingest batch committed to the catalog
    INDEX_BATCH = "index_batch"  # the newest batch the saved index file holds
    INDEX_VECTORS = "index_vectors"  # how many vectors the saved index file holds
    # The saved index file as it was written (inode:mtime_ns:size): a file replaced or
    # cut short since (a restored backup, a partial copy) is read and checked in full.
    INDEX_FILE = "index_file"
    CALIBRATION = "calibration"  # what a real match scores (ranking.calibration, JSON)
    EXCLUDE = "exclude"  # what every walk of the folders leaves out (ingest.exclude, JSON)
    # The optional decoders that failed files wait for ("heif,raw"): a run where one is
    # installed tries them again (ingest.run).
    AWAITING = "awaiting_decoders"
    # A shared catalog's identity (random hex), recorded beside each host's index file:
    # a file made for an earlier catalog of the same name is then never mistaken for one
    # of this catalog, whose image ids start again from 1.
    CATALOG_ID = "catalog_id"
