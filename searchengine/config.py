"""Configuration: one frozen dataclass, built once from options and the environment."""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from searchengine.errors import ConfigError
from searchengine.models.spec import DEFAULT_MODEL
from searchengine.values import DEVICES, ENGINES, PRECISIONS, RUNTIMES

if TYPE_CHECKING:
    from searchengine.index_choice import IndexPolicy

DEFAULT_COLLECTION = "default"
CATALOG_FILE = "catalog.sqlite"  # a collection's SQLite catalog, in its folder under home
INDEX_FILE = "vectors.faiss"  # its vector index, beside it
LOCATION_FILE = "catalog.json"  # in a collection's folder: where a server catalog lives
ENV_PREFIX = "SEARCHENGINE_"
# A healthy read and decode of the largest image allowed (100 MP) takes seconds; far
# past that a decoder (or the disk) is taken to hang, and the file is failed.
DEFAULT_LOAD_SECONDS = 120.0


def default_workers() -> int:
    """An ingest's load threads (or lanes): one per core, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


@dataclass(frozen=True)
class Config:
    """Everything a command needs to know that is not its own argument.

    Attributes:
        home: folder holding one sub-folder per collection (``indexes/`` by default).
        model: model spec used when a new collection is created.
        device: ``auto``, ``cpu`` or ``cuda``.
        batch_size: images per encoder call; ``None`` picks one for the device.
        workers: decode threads; ``None`` picks one for the machine.
        database_url: SQLAlchemy URL for the catalog; ``None`` keeps a SQLite file
            inside the collection folder.
        checkpoint_seconds: how often a long ingest saves the vector index. Committed
            batches are safe either way (the catalog logs their vectors); saving more
            often only shortens the replay after a crash.
        runtime: ``auto`` (ONNX Runtime for open_clip models on a CPU, torch on CUDA),
            ``torch`` or ``onnx``.
        index_memory_mb: memory budget for the vector index; past it a larger
            collection gets compressed (PQ) codes at some cost in recall. ``None``:
            no budget (exact, then SQ8 codes past 50k images).
        index_policy: thresholds of the index choice; ``None``: the measured defaults
            (``searchengine.index_choice.IndexPolicy``).
        load_seconds: how long ingest waits for one file, once read, to be decoded
            before it records the file as failed and goes on (reading is waited for
            while it gets on: ``ingest.load.READ_SECONDS``).
        engine: where ingest loads and embeds: ``local`` (this process) or ``ray`` (Ray
            Data tasks and actors; this process still plans and writes).
        ray_address: the Ray cluster to join (``host:port`` or ``ray://host:port``);
            ``None`` or ``auto`` starts a Ray instance on this machine for the run.
        precision: the image tower a new collection embeds with: ``fp32``, or ``int8``
            (``models.quantize``: checked on the collection's photos first, fp32 if it
            fails). ``None``: the collection's own, fp32 for a new one.
        lock_timeout_s: how long a statement on a server catalog waits for a table
            lock another session holds before it gives up; ``None``: 30 s
            (``backends.LOCK_TIMEOUT_S``). A web server waits less
            (``backends.SERVE_LOCK_TIMEOUT_S``). The URL's own ``lock_timeout`` wins.
    """

    home: Path = Path("indexes")
    model: str = DEFAULT_MODEL
    device: str = "auto"
    batch_size: int | None = None
    workers: int | None = None
    database_url: str | None = None
    checkpoint_seconds: float = 60.0
    runtime: str = "auto"
    index_memory_mb: float | None = None
    index_policy: IndexPolicy | None = None
    load_seconds: float = DEFAULT_LOAD_SECONDS
    engine: str = "local"
    ray_address: str | None = None
    precision: str | None = None
    lock_timeout_s: float | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Config:
        """Build from ``SEARCHENGINE_*`` variables, then explicit overrides (``None`` ignored)."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        if home := env.get(ENV_PREFIX + "HOME"):
            if Path(home).expanduser().is_file():
                raise ConfigError(
                    f"{ENV_PREFIX}HOME={home!r} is a file; it names the folder that holds "
                    "collections (made if missing)"
                )
            values["home"] = Path(home)
        if model := env.get(ENV_PREFIX + "MODEL"):
            values["model"] = model
        if device := env.get(ENV_PREFIX + "DEVICE"):
            values["device"] = _choice(ENV_PREFIX + "DEVICE", device, DEVICES)
        if url := env.get(ENV_PREFIX + "DATABASE_URL"):
            values["database_url"] = url
        if raw := env.get(ENV_PREFIX + "CHECKPOINT_SECONDS"):
            try:
                values["checkpoint_seconds"] = max(0.0, float(raw))
            except ValueError:
                raise ConfigError(
                    f"{ENV_PREFIX}CHECKPOINT_SECONDS={raw!r} must be a number"
                ) from None
        if runtime := env.get(ENV_PREFIX + "RUNTIME"):
            values["runtime"] = _choice(ENV_PREFIX + "RUNTIME", runtime, RUNTIMES)
        if precision := env.get(ENV_PREFIX + "PRECISION"):
            values["precision"] = _choice(ENV_PREFIX + "PRECISION", precision, PRECISIONS)
        if raw := env.get(ENV_PREFIX + "LOAD_SECONDS"):
            values["load_seconds"] = _positive_float(ENV_PREFIX + "LOAD_SECONDS", raw)
        if engine := env.get(ENV_PREFIX + "ENGINE"):
            values["engine"] = _choice(ENV_PREFIX + "ENGINE", engine, ENGINES)
        if address := env.get(ENV_PREFIX + "RAY_ADDRESS"):
            values["ray_address"] = address
        if raw := env.get(ENV_PREFIX + "INDEX_MEMORY_MB"):
            values["index_memory_mb"] = _positive_float(ENV_PREFIX + "INDEX_MEMORY_MB", raw)
        for key in ("batch_size", "workers"):
            if raw := env.get(ENV_PREFIX + key.upper()):
                values[key] = _positive_int(ENV_PREFIX + key.upper(), raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "home" in values:
            values["home"] = Path(str(values["home"])).expanduser()
        return replace(cls(), **values)  # type: ignore[arg-type]


def _choice(name: str, raw: str, choices: tuple[str, ...]) -> str:
    """An environment value that must be one of ``choices`` (checked before any work)."""
    if raw not in choices:
        raise ConfigError(f"{name}={raw!r} is not one of: {', '.join(choices)}")
    return raw


def _positive_float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise ConfigError(f"{name}={raw!r} must be a positive number")
    return value


def _positive_int(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} must be a positive integer")
    return value


def collection_command(folder: Path, verb: str) -> str:
    """``searchengine VERB`` for the collection in ``folder``, ready to paste: its name,
    and ``--index-dir`` unless the collection is in the default place."""
    home = folder.parent
    index_dir = "" if home == Config.home else f" --index-dir {shlex.quote(str(home))}"
    return f"searchengine {verb} -c {shlex.quote(folder.name)}{index_dir}"


def user_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """This user's cache folder for searchengine: ``$XDG_CACHE_HOME/searchengine``
    (``~/.cache/searchengine``)."""
    env = os.environ if env is None else env
    return Path(env.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "searchengine"
