"""Bringing a vector index up to its catalog, from the catalog's vector log.

The catalog is the one truth; an index file is a checkpoint of it (``store.py``). The
replay here serves both crash recovery and a shared catalog's hosts:

- **Catching up** (``replay_log``): the vectors of batches newer than the index file's
  are replayed, and ids without an ok row are removed. A writer does it under the
  lock and saves the file; a reader does it in memory and writes nothing.
- **A host with no file** (``build_from_log``) builds its whole index from a shared
  catalog's log as the type the collection records: trained on a sample, filled a
  chunk at a time, never an exact copy of every vector first (206 GB at 10^8, where
  SQ8 is 54).
- **Backfill** (``backfill``): a catalog that began on one host under an earlier
  release, which trimmed its log, gets the vectors only that host's file holds.
"""

from __future__ import annotations

import json
from pathlib import Path

from searchengine import index_choice
from searchengine.catalog import Catalog, log_vectors, logged_ids, members, pending_vectors
from searchengine.config import collection_command
from searchengine.index_choice import IndexPolicy
from searchengine.logged_vectors import LoggedVectors
from searchengine.progress import Progress
from searchengine.values import MetaKey
from searchengine.vectors import EXACT, FaissIndex

__all__ = ["SLOW_BUILD_S", "backfill", "build_from_log", "replay_log", "slow_build_note"]

SLOW_BUILD_S = 2.0  # a reader's build from the log that takes longer is worth a note


def replay_log(catalog: Catalog, index: FaissIndex, saved: int) -> int:
    """Replay logged vectors newer than batch ``saved`` into ``index``, drop ids without
    an ok row; returns how many ids that fixed."""
    ok = catalog.ok_id_array()
    held = index.ids()
    orphans = held[~members(held, ok)]
    index.remove(orphans)
    replayed = 0
    with catalog.transaction() as conn:
        for ids, vectors in pending_vectors(conn, saved):
            keep = members(ids, ok)
            if not keep.any():
                continue
            index.remove(ids[keep])
            index.add(ids[keep], vectors[keep])
            replayed += int(keep.sum())
    return replayed + len(orphans)


def build_from_log(
    catalog: Catalog,
    dim: int | None,
    policy: IndexPolicy,
    reader: bool = False,
    progress: Progress | None = None,
) -> FaissIndex | None:
    """A host's whole index, built from a shared catalog's log as the type the
    collection records (``IVF…,SQ8`` past 50k vectors), or None where that type is
    exact or the log too small to train it (then the log is replayed into an exact
    index, and the end of the run picks the type). A ``reader``, which saves nothing,
    replays exact up to ``policy.reader_exact_max`` vectors: quicker than training,
    and exact.

    Trained on a sample read by id and filled from the streamed log, it never holds the
    vectors at full size (``logged_vectors.py``); its ``nprobe`` is measured on these
    vectors, as at every build, and an accelerator is tried where the collection has
    one.
    """
    recorded = catalog.get_meta(MetaKey.INDEX_TYPE) or EXACT
    if recorded == EXACT or dim is None:
        return None
    if reader and catalog.ok_count() <= policy.reader_exact_max:
        return None
    lists = index_choice.ivf_lists(recorded)
    source = LoggedVectors(catalog, dim, catalog.ok_id_array())
    if lists is None or len(source) < max(policy.min_ivf, lists * index_choice.MIN_PER_LIST):
        return None
    params = json.loads(catalog.get_meta(MetaKey.INDEX_PARAMS) or "{}")
    index, _ = index_choice.build_index(
        source,
        recorded,
        accelerate=bool(params.get("accelerator")),
        policy=policy,
        progress=progress,
    )
    return index


def backfill(catalog: Catalog, index: FaissIndex, batch: int) -> None:
    """Give a shared catalog the vectors only this host's file holds, as of ``batch``.

    A catalog that began on one host (an earlier release, which trimmed its vector log)
    has its vectors in that host's file alone; copied into the catalog, every other
    host can build its index from them instead of losing those rows.
    """
    with catalog.transaction() as conn:
        stored = logged_ids(conn)
    held = index.ids()
    lacking = held[~members(held, stored)]
    for ids, vectors in index.chunks(lacking):
        with catalog.transaction() as conn:
            log_vectors(conn, batch, [int(i) for i in ids], vectors)


def slow_build_note(name: str, folder: Path, vectors: int, took: float) -> list[str]:
    """What a reader that built its whole index from the log in ``took`` seconds tells
    its user: nothing if that was quick, else how to keep the index on this host."""
    if took < SLOW_BUILD_S:
        return []
    return [
        f"this host has no vector index of collection {name!r}: it was built from the "
        f"catalog ({vectors:,} vectors, {took:.1f} s) and is not kept; "
        f"`{collection_command(folder, 'index')}` on this host once saves it"
    ]
