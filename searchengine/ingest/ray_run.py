"""Ingest stage 3 on a Ray cluster: Ray Data loads and embeds, this process writes.

The sibling of ``run.Ingest``, with the same plan, load and write stages: this process
(the driver) plans by stat alone, holds the store and commits; Ray Data runs
``load`` (read, hash, decode, preprocess) in CPU tasks and the model in an actor pool.

- **Where the model runs.** One model per actor, loaded by ``load_encoder`` from the
  spec string (offline with the driver's Hugging Face cache settings, which the actors
  receive). With GPUs in the cluster each actor takes one (``num_gpus=1``) and the
  load tasks use the CPUs; without, there is one actor per CPU and Ray Data fuses the
  load tasks into the actors (same resources), so each core loads and embeds its own
  batch: the local engine's lanes, spread over the cluster.
- **What travels.** To the tasks: each file's ``FileEntry`` (a path and its stat) and,
  once, the model's ``PortablePreprocessor`` (a few hundred bytes) and the contents
  already indexed. To the actors: decoded pixels (ViT-B-32: 602 KB an image). Back to
  the driver: the item without its pixels, and a vector (2 KB). Workers read files by
  the paths the driver planned, so every node must see the photos at the same paths
  (a shared filesystem); a worker that cannot read one records that file as failed.
- **Commit order.** Ray Data runs with ``preserve_order``, so batches reach the driver
  in planned order whatever order tasks finish or are retried in: the driver commits
  the planned files in slices of ``batch_size``, as the local lanes do, and catalog
  ids follow the plan. The cost is waiting on the oldest batch in flight, a few
  batches per actor at most.
- **Faults.** Ray Data retries tasks and restarts actors that die, without limit; a
  batch reaches the driver once, so nothing is lost or committed twice. A file that
  crashes its decoder would so restart its worker forever, so each load task keeps a
  journal of the files it is decoding in the node's temporary folder
  (``ingest/inflight.py``), named after the run and the batch: a retry of a batch
  whose worker died probes the files in flight in a child process first and fails
  the one that crashes it. A crashing file costs one retry on each node it lands
  on. (Retry limits are not set: the two stages must share their remote arguments
  for Ray Data to fuse them on a CPU cluster, and tasks and actors take different
  ones.) The driver is the only writer: killed, it leaves what the
  store guarantees (``store.py``), and the next run resumes from the catalog.
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from searchengine.config import DEFAULT_LOAD_SECONDS
from searchengine.errors import ClusterError, ModelError, SearchEngineError
from searchengine.ingest import inflight
from searchengine.ingest.load import Item, Loader, Pixels, stack_pixels
from searchengine.ingest.ray_cluster import check_engine, ray_connection
from searchengine.ingest.run import Ingest, _StopFlag, default_batch_size
from searchengine.ingest.scan import FileEntry
from searchengine.models.base import Encoder, image_lanes
from searchengine.models.portable import Portable, PortablePreprocessor
from searchengine.progress import Progress
from searchengine.store import Store

# What an actor needs to find model weights as the driver does (and offline if it is).
FORWARDED_ENV = (
    "HF_HOME",
    "HF_HUB_CACHE",
    "HF_HUB_OFFLINE",
    "HUGGINGFACE_HUB_CACHE",
    "TRANSFORMERS_OFFLINE",
)
_NO_PIXELS = np.zeros(0, dtype=np.float32)


@dataclass(frozen=True)
class PoolShape:
    """The actor pool: how many actors, and what each one holds."""

    actors: int
    gpus: int  # per actor: 1 on a GPU cluster, else 0
    device: str  # what the actors load the model on
    threads: int  # model threads an actor may use (CPU actors)


def pool_shape(resources: dict[str, float], device: str, workers: int | None) -> PoolShape:
    """One actor per GPU, or (without GPUs, or with ``device`` cpu) one per CPU.

    Args:
        resources: the cluster's total resources (``ray.cluster_resources()``).
        device: the configured device (``auto``, ``cpu`` or ``cuda``).
        workers: at most this many actors (``--workers``), if given.

    Raises:
        ClusterError: ``cuda`` asked for and the cluster has no GPU.
    """
    cpus = max(1, int(resources.get("CPU", 1)))
    gpus = int(resources.get("GPU", 0))
    if device == "cuda" and not gpus:
        raise ClusterError("--device cuda was asked for but the Ray cluster has no GPU")
    if gpus and device != "cpu":
        return PoolShape(min(workers or gpus, gpus), 1, "cuda", 1)
    actors = min(workers or cpus, cpus)
    return PoolShape(actors, 0, "cpu", max(1, cpus // actors))


class RayIngest(Ingest):
    """One ingest run whose loading and embedding run on a Ray cluster.

    Args:
        store: the collection's store, held for writing (``store.writing()``).
        get_encoder: the model on the driver: its size, its portable preprocessing,
            and (ONNX on a CPU) an export made once before the actors load it.
        spec: the model spec the actors load.
        address: the cluster to join; ``None`` or ``auto`` starts one on this machine.
        device: ``auto``, ``cpu`` or ``cuda`` (``auto``: GPU actors when the cluster
            has GPUs).
        runtime: the model runtime the actors use (``load_encoder``).
        batch_size: images per model call and per commit; None picks one per device.
        workers: at most this many actors.
        progress: where files done are reported.
        checkpoint_seconds: how often a long run saves the index file.
        load_seconds: how long a task may read and decode one file before it is
            failed as hung.
        adapt: called after each checkpoint (see ``Ingest``).
    """

    def __init__(
        self,
        store: Store,
        get_encoder: Callable[[], Encoder],
        *,
        spec: str,
        address: str | None = None,
        device: str = "auto",
        runtime: str = "auto",
        batch_size: int | None = None,
        workers: int | None = None,
        progress: Progress | None = None,
        checkpoint_seconds: float = 60.0,
        load_seconds: float = DEFAULT_LOAD_SECONDS,
        adapt: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(
            store,
            get_encoder,
            batch_size=batch_size,
            workers=workers,
            progress=progress,
            checkpoint_seconds=checkpoint_seconds,
            load_seconds=load_seconds,
            adapt=adapt,
        )
        self.spec = spec
        self.address = address
        self.device = device
        self.runtime = runtime
        self._workers = workers  # None: sized to the cluster, not to this machine
        check_engine(address)  # also on a run with nothing to embed (which never starts Ray)

    def _embed(self, entries: list[FileEntry], encoder: Encoder, stop: _StopFlag) -> None:
        if not isinstance(encoder, Portable):
            raise ModelError(f"{encoder.spec} cannot preprocess images apart from its model")
        preprocessor = encoder.portable_preprocessor()
        with ray_connection(self.address) as ray:
            shape = pool_shape(ray.cluster_resources(), self.device, self._workers)
            size = self.batch_size or default_batch_size(shape.device)
            dataset = self._dataset(ray, entries, preprocessor, shape, size)
            # A generator, so that a stop can close it (the iterable has no close).
            batches = iter(dataset.iter_batches(batch_size=size, batch_format="numpy"))
            try:
                for batch in batches:
                    items, vectors = unpack(batch)
                    self.writer.commit(items, vectors)
                    self.progress.advance(len(items))
                    if stop.requested:
                        break
                    self._checkpoint()
            except Exception as exc:
                if not type(exc).__module__.startswith("ray."):
                    raise  # the driver's own (the store's) errors pass as they are
                raise library_error(exc) from exc
            finally:
                batches.close()  # stops the streaming execution (and its actors) now

    def _dataset(
        self,
        ray: Any,
        entries: list[FileEntry],
        preprocessor: PortablePreprocessor,
        shape: PoolShape,
        size: int,
    ) -> Any:
        rows = [{"entry": pickle.dumps(entry)} for entry in entries]
        dataset = ray.data.from_items(rows, override_num_blocks=math.ceil(len(rows) / size))
        dataset.context.execution_options.preserve_order = True
        dataset.context.enable_progress_bars = False  # the driver's own bar counts commits
        env = {key: os.environ[key] for key in FORWARDED_ENV if key in os.environ}
        # The same resources and environment for both stages lets Ray Data fuse them on
        # a CPU cluster (see the module docstring).
        common: dict[str, Any] = {"batch_size": size, "runtime_env": {"env_vars": env}}
        loaded = dataset.map_batches(
            load_rows,
            fn_kwargs={
                "preprocessor": preprocessor,
                "known": self.writer.known_hashes,
                "seconds": self.load_seconds,
                "run": uuid.uuid4().hex,
            },
            num_cpus=1,
            **common,
        )
        return loaded.map_batches(
            Embedder,
            fn_constructor_kwargs={
                "spec": self.spec,
                "device": shape.device,
                "runtime": self.runtime,
                "threads": shape.threads,
            },
            compute=ray.data.ActorPoolStrategy(size=shape.actors),
            num_cpus=1,
            num_gpus=shape.gpus,
            **common,
        )


def load_rows(
    batch: dict[str, np.ndarray],
    preprocessor: PortablePreprocessor,
    known: frozenset[str],
    seconds: float = DEFAULT_LOAD_SECONDS,
    run: str = "",
) -> dict[str, np.ndarray]:
    """Ray task: ``load`` each planned file of a batch (rows of pickled entries), as in
    a local run (``Loader``: a decoding past ``seconds`` failed, a read that stalls left
    unread); a mount given up by one of the run's tasks is given up by the later ones
    in this worker process, without their waiting on it again. Files a crashed earlier
    attempt of this batch left in flight are probed first (module docstring)."""
    entries: list[FileEntry] = [pickle.loads(raw) for raw in batch["entry"]]
    journal = task_journal(run, entries)
    entries = inflight.recheck(journal, entries, preprocessor.image_size, seconds)
    loader = Loader(seconds, inflight.Journal(journal), run=run or None)
    try:
        items = loader.batch(entries, preprocessor, known)
    finally:
        loader.close()
        if loader.journal is not None:
            loader.journal.close()  # no crash: nothing was left half-loaded
    return {"item": _pickled(items)}


def task_journal(run: str, entries: list[FileEntry]) -> Path:
    """Where a batch's load task notes its files in flight: the node's temporary
    folder, named after the run and the batch, so a retry on this node finds it."""
    key = hashlib.blake2b(
        "\n".join(e.path for e in entries).encode("utf-8", "surrogateescape"), digest_size=12
    ).hexdigest()
    folder = Path(tempfile.gettempdir()) / "searchengine-ray"
    folder.mkdir(exist_ok=True)
    return folder / f"{run or 'run'}-{key}.journal"


class Embedder:
    """Ray actor: the model, loaded once, embeds the decoded items of each batch.

    Returns each item without its pixels (the driver needs none) and its vector (zeros
    for items that were not decoded).
    """

    def __init__(self, spec: str, device: str, runtime: str, threads: int) -> None:
        from searchengine.models import load_encoder

        self.encoder = load_encoder(spec, device, runtime)
        if threads == 1:
            # One actor per core: one thread a call, as a lane of the local engine.
            image_lanes(self.encoder, 2)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items: list[Item] = [pickle.loads(raw) for raw in batch["item"]]
        vectors = np.zeros((len(items), self.encoder.dim), dtype=np.float32)
        pixels = stack_pixels(items)
        if pixels is not None:
            decoded = [i for i, item in enumerate(items) if isinstance(item, Pixels)]
            vectors[decoded] = self.encoder.encode_pixels(pixels)
        light = [replace(it, pixels=_NO_PIXELS) if isinstance(it, Pixels) else it for it in items]
        return {"item": _pickled(light), "vector": vectors}


def unpack(batch: dict[str, np.ndarray]) -> tuple[list[Item], np.ndarray | None]:
    """A batch from the actors as ``Writer.commit`` takes it: items, decoded items' vectors."""
    items: list[Item] = [pickle.loads(raw) for raw in batch["item"]]
    decoded = [i for i, item in enumerate(items) if isinstance(item, Pixels)]
    vectors = np.asarray(batch["vector"], dtype=np.float32)[decoded] if decoded else None
    return items, vectors


def _pickled(values: list[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = [pickle.dumps(v, protocol=pickle.HIGHEST_PROTOCOL) for v in values]
    return out


def library_error(exc: BaseException) -> BaseException:
    """The library error a Ray failure carries (Ray wraps what a worker raised), or a
    ``ClusterError`` with its first line."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, (SearchEngineError, KeyboardInterrupt)):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return ClusterError(f"the Ray run failed: {first}")
