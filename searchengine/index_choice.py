"""Which FAISS index a collection gets, by its size and a memory budget, and building it.

| vectors                  | index           | bytes/vector (512-d) | search                     |
|--------------------------|-----------------|----------------------|----------------------------|
| < ``FLAT_MAX`` (50k)     | ``Flat``        | ~2070                | exact, < 5 ms at 50k        |
| >= 50k                   | ``IVFn,SQ8``    | ~540                 | recall@10 tuned to >= 0.95 |
| >= 200k, spread out      | ... + fast-scan | ~680                 | same recall, ~3x faster    |
| over a memory budget     | ``IVFn,PQm``    | m + ~24              | lower recall (what fits)   |

``n`` (inverted lists) is the power of two nearest ``sqrt(N)``: 256 at 100k, 1024 at
1M. SQ8 keeps a byte per dimension, so its ranking error is small and the recall
is governed by how many lists a query visits (``nprobe``). That number is not
guessed: ``build_index`` measures recall@10 against exact search on the
collection's own vectors, with queries made from held-out vectors pulled off the
data manifold by noise (text queries sit far from every image in CLIP space), and
keeps the smallest ``nprobe`` (to 1/16) that reaches ``TARGET_RECALL`` plus a margin.

From ``ACCEL_MIN`` vectors, when the tuned SQ8 index still needs over
``ACCEL_WORTH_MS`` a query (vectors spread out, so a query visits many lists),
``build_index`` also builds a fast-scan accelerator (see ``FaissIndex``: 4-bit
PQ candidates re-scored on SQ8, ~136 more bytes a vector at 512-d), tunes its
``nprobe`` the same way (with 16 candidates a result, or 32 or 64 where the codes
miss too many for the aim) and keeps it only if it reaches the aim at least
``ACCEL_SPEEDUP`` times faster. At 1M vectors spread over 100k clusters this
took a query from 23-34 ms to ~8 ms at recall@10 0.97 (docs/benchmarks.md).

The index is rebuilt at the end of an ingest run when the wanted type changes:
Flat past 50k, back to Flat below 25k (the gap stops a collection hovering at
the threshold from rebuilding every run), and a new IVF when the list count
would change fourfold or the memory budget asks for another code.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from searchengine.progress import NoProgress, Progress
from searchengine.vectors import EXACT, REFINE_FACTORS, FaissIndex

FLAT_MAX = 50_000  # exact search up to here: ~100 MB and a few ms at 512-d
MIN_IVF = 4_096  # never IVF below this: too few vectors to train the lists
TRAIN_PER_LIST = 64  # k-means sample per list
MIN_PER_LIST = 39  # faiss warns when it trains lists on fewer vectors than this
TARGET_RECALL = 0.95
MARGIN = 0.02  # calibration aims this much above the target
CALIBRATION_QUERIES = 256
NOISE = 0.85  # share of a calibration query that is random direction (cos to its seed ~0.5)
K = 10
ACCEL_MIN = 200_000  # vectors before an accelerator is considered
READER_EXACT_MAX = 1_000_000  # a reader's index built from a shared log: exact up to here
ACCEL_WORTH_MS = 2.0  # ...and only when a tuned SQ8 query takes longer than this
ACCEL_SPEEDUP = 1.5  # kept only when at least this much faster at the same aim
TIMED_QUERIES = 64  # calibration queries timed one by one for that comparison
_IVF_RE = re.compile(r"^IVF(\d+),(\w+)$")


@dataclass(frozen=True)
class IndexPolicy:
    """The thresholds above, as one value a collection's config carries.

    The defaults are the measured ones; tests and benchmarks pass smaller ones to
    exercise IVF and the accelerator on a few hundred vectors.

    Attributes:
        flat_max: exact search below this many vectors.
        min_ivf: never IVF below this many (too few to train the lists).
        nlist: inverted lists of an IVF index; None: the power of two nearest sqrt(N).
        target_recall: recall@10 the tuned ``nprobe`` reaches (plus ``MARGIN``).
        accel_min: vectors before an accelerator is considered.
        accel_worth_ms: ...and only when a tuned SQ8 query takes longer than this.
        accel_speedup: kept only when at least this much faster at the same aim.
        reader_exact_max: a reader on a host without an index file builds it from a
            shared catalog's log exact up to this many vectors (2 GB at 512-d: quicker
            to build, ~3x at 60k, and exact), as the recorded type past it.
    """

    flat_max: int = FLAT_MAX
    min_ivf: int = MIN_IVF
    nlist: int | None = None
    target_recall: float = TARGET_RECALL
    accel_min: int = ACCEL_MIN
    accel_worth_ms: float = ACCEL_WORTH_MS
    accel_speedup: float = ACCEL_SPEEDUP
    reader_exact_max: int = READER_EXACT_MAX

    def lists_for(self, n: int) -> int:
        return self.nlist if self.nlist is not None else nlist_for(n)


DEFAULT_POLICY = IndexPolicy()


class VectorSource(Protocol):
    """What ``build_index`` reads its vectors from: an index, or a catalog's vector log
    (``logged_vectors.LoggedVectors``)."""

    dim: int

    def ids(self) -> np.ndarray: ...
    def reconstruct_batch(self, ids: np.ndarray) -> np.ndarray: ...
    def chunks(self, ids: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...


@dataclass(frozen=True)
class BuildReport:
    """What ``build_index`` measured on the collection's vectors."""

    index_type: str
    vectors: int
    nprobe: int | None = None
    recall_at_10: float | None = None  # on calibration queries, vs exact search
    queries: int = 0
    accelerator: str | None = None  # fast-scan accelerator kept, if any
    accelerator_nprobe: int | None = None
    accelerator_refine_factor: int | None = None  # candidates re-scored per result
    accelerator_recall_at_10: float | None = None
    query_ms: float | None = None  # median single query, SQ8 alone
    accelerated_query_ms: float | None = None  # ... and with the accelerator tried

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def nlist_for(n: int) -> int:
    """Inverted lists for ``n`` vectors: the power of two nearest sqrt(n)."""
    lists = 2 ** round(math.log2(max(1.0, math.sqrt(n))))
    return int(max(64, min(lists, 65_536, max(64, n // 39))))


def ivf_lists(index_type: str) -> int | None:
    """The inverted-list count of an ``IVF<n>,…`` type, None for any other type."""
    match = _IVF_RE.match(index_type)
    return int(match.group(1)) if match else None


def bytes_per_vector(index_type: str, dim: int) -> float:
    """Memory a vector costs in an index of this type (codes + id + id lookup)."""
    if index_type == EXACT:
        return 4 * dim + 8 + 16  # float32 + id + IDMap2's reverse map entry
    match = _IVF_RE.match(index_type)
    if match is None:
        raise ValueError(f"unknown index type {index_type!r}")
    code = match.group(2)
    if code == "SQ8":
        size = float(dim)
    elif code.startswith("PQ"):
        size = float(code[2:])
    else:
        raise ValueError(f"unknown index code {code!r}")
    return size + 8 + 16  # codes + id in the list + hash-table direct map entry


def accelerator_bytes(dim: int) -> float:
    """What an accelerator adds per vector: 4-bit codes for dim/2 subspaces + id."""
    return dim / 4 + 8


def choose_index(
    n: int, dim: int, memory_mb: float | None = None, policy: IndexPolicy = DEFAULT_POLICY
) -> str:
    """The index type for ``n`` vectors of ``dim`` within ``memory_mb`` (None: no limit)."""
    if n < policy.min_ivf:
        return EXACT
    budget = None if memory_mb is None else memory_mb * 2**20 / n
    if n < policy.flat_max and (budget is None or bytes_per_vector(EXACT, dim) <= budget):
        return EXACT
    nlist = policy.lists_for(n)
    sq8 = f"IVF{nlist},SQ8"
    if budget is None or bytes_per_vector(sq8, dim) <= budget:
        return sq8
    options = [m for m in (dim // 4, dim // 8, dim // 16, dim // 32) if m >= 4 and dim % m == 0]
    for m in options:
        if bytes_per_vector(f"IVF{nlist},PQ{m}", dim) <= budget:
            return f"IVF{nlist},PQ{m}"
    return f"IVF{nlist},PQ{options[-1] if options else 4}"


def wanted_type(
    index: FaissIndex, memory_mb: float | None = None, policy: IndexPolicy = DEFAULT_POLICY
) -> str | None:
    """The type ``index`` should be rebuilt into now, or None to keep it."""
    n = len(index)
    target = choose_index(n, index.dim, memory_mb, policy)
    current = index.index_type
    if target == current:
        return None
    if current == EXACT:
        return target
    if target == EXACT:
        # Stay approximate until the collection is well below the threshold, unless
        # Flat is what fits the budget anyway (then n is small).
        return EXACT if n < policy.flat_max // 2 else None
    now, then = _IVF_RE.match(current), _IVF_RE.match(target)
    if now is None or then is None or now.group(2) != then.group(2):
        return target
    ratio = int(then.group(1)) / int(now.group(1))
    return target if ratio >= 4 or ratio <= 0.25 else None


def build_index(
    source: VectorSource,
    index_type: str,
    *,
    seed: int = 0,
    memory_mb: float | None = None,
    accelerate: bool | None = None,
    policy: IndexPolicy = DEFAULT_POLICY,
    progress: Progress | None = None,
) -> tuple[FaissIndex, BuildReport]:
    """A new index of ``index_type`` holding every vector of ``source`` under its id.

    IVF types are trained on a sample, filled chunk by chunk (the vectors are never
    all copied at once), and get the smallest ``nprobe`` whose measured recall@10
    reaches ``target_recall + MARGIN`` (or the best one reachable, under a tight
    memory budget). An SQ8 index may get an accelerator (module docstring):
    ``accelerate`` None decides by size and measured query time, True builds
    one whenever it reaches the aim, False never does; it must fit ``memory_mb``.
    ``progress`` counts the vectors as they are added.
    """
    ids = source.ids()
    new = FaissIndex(source.dim, index_type)
    progress = progress or NoProgress()
    if new.exact:
        progress.start(len(ids))
        for part, vectors in source.chunks(ids):
            new.add(part, vectors)
            progress.advance(len(part))
        progress.close()
        return new, BuildReport(new.index_type, len(new))
    rng = np.random.default_rng(seed)
    match = _IVF_RE.match(index_type)
    nlist = int(match.group(1)) if match else policy.lists_for(len(ids))
    sample = np.sort(rng.choice(len(ids), min(len(ids), nlist * TRAIN_PER_LIST), replace=False))
    new.train(source.reconstruct_batch(ids[sample]))
    queries = calibration_queries(source.reconstruct_batch(_pick(rng, ids)), rng)
    truth = _TopK(len(queries))
    progress.start(len(ids))
    for part, vectors in source.chunks(ids):
        new.add(part, vectors)
        truth.update(queries @ vectors.T, part)
        progress.advance(len(part))
    progress.close()
    aim = policy.target_recall + MARGIN
    nprobe, recall = tune_nprobe(new, queries, truth.ids, aim)
    report = BuildReport(new.index_type, len(new), nprobe, recall, len(queries))
    fits = memory_mb is None or memory_mb * 2**20 / len(ids) >= bytes_per_vector(
        new.index_type, new.dim
    ) + accelerator_bytes(new.dim)
    if accelerate is False or not fits or new.dim % 2 or not new.index_type.endswith(",SQ8"):
        return new, report
    if accelerate is None and len(ids) < policy.accel_min:
        return new, report
    query_ms = median_query_ms(new, queries[:TIMED_QUERIES])
    report = replace(report, query_ms=query_ms)
    if accelerate is None and query_ms <= policy.accel_worth_ms:
        return new, report
    new.build_accelerator(ids[sample])
    for factor in REFINE_FACTORS:  # more candidates only where the codes miss too many
        new.refine_factor = factor
        fast_nprobe, fast_recall = tune_nprobe(new, queries, truth.ids, aim, accelerator=True)
        if fast_recall >= aim:
            break
    fast_ms = median_query_ms(new, queries[:TIMED_QUERIES])
    report = replace(report, accelerated_query_ms=fast_ms)
    faster = accelerate or fast_ms * policy.accel_speedup <= query_ms
    if fast_recall < aim or not faster:
        new.drop_accelerator()
        return new, report
    return new, replace(
        report,
        accelerator=new.accelerator,
        accelerator_nprobe=fast_nprobe,
        accelerator_refine_factor=new.refine_factor,
        accelerator_recall_at_10=fast_recall,
    )


def single_query_times(index: Any, queries: np.ndarray) -> list[float]:
    """Seconds each query takes searched alone, as a user's search is (any index
    with ``search(queries, k)``: a ``FaissIndex`` or a bare FAISS one)."""
    times = []
    for query in queries:
        start = time.perf_counter()
        index.search(query[None], K)
        times.append(time.perf_counter() - start)
    return times


def median_query_ms(index: Any, queries: np.ndarray) -> float:
    """Median milliseconds of one query searched alone."""
    return float(np.median(single_query_times(index, queries))) * 1000


def calibration_queries(seeds: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unit queries near stored vectors but off their manifold (cosine ~0.5 to a seed)."""
    noise = rng.standard_normal(seeds.shape).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    unit = seeds / np.maximum(np.linalg.norm(seeds, axis=1, keepdims=True), 1e-12)
    queries = math.sqrt(1 - NOISE**2) * unit + NOISE * noise
    return np.ascontiguousarray(queries / np.linalg.norm(queries, axis=1, keepdims=True))


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int = K) -> float:
    """Mean share of each row's true top ``k`` ids that ``found`` contains."""
    hits = [
        len(set(f[:k].tolist()) & set(t[:k].tolist()) - {-1}) / max(1, np.sum(t[:k] >= 0))
        for f, t in zip(found, truth, strict=True)
    ]
    return float(np.mean(hits)) if hits else 1.0


def tune_nprobe(
    index: FaissIndex,
    queries: np.ndarray,
    truth: np.ndarray,
    aim: float,
    *,
    accelerator: bool = False,
) -> tuple[int, float]:
    """Smallest ``nprobe`` with recall@10 >= ``aim`` (to 1/16 of it); sets it on ``index``.

    Powers of two first; then a bisection between the last two, since search time
    grows with ``nprobe``: where 128 lists fall short and 256 overshoot, ~170 is
    what the target costs. When no ``nprobe`` reaches ``aim`` (PQ codes under a
    tight budget), the smallest one within 0.005 of the best recall seen is kept:
    more lists would cost time without finding more. With ``accelerator`` it
    tunes the accelerator's ``nprobe`` (searches then go through it).
    """
    nlist = int(index._ivf.nlist) if index._ivf is not None else 1

    def set_nprobe(nprobe: int) -> None:
        if accelerator:
            index.accelerator_nprobe = nprobe
        else:
            index.nprobe = nprobe

    def measure(nprobe: int) -> float:
        set_nprobe(nprobe)
        _, found = index.search(queries, K)
        return recall_at_k(found, truth)

    tried: list[tuple[int, float]] = []
    nprobe = 1
    while nprobe <= nlist:
        recall = measure(nprobe)
        tried.append((nprobe, recall))
        if recall >= aim:
            low, high, best = nprobe // 2, nprobe, (nprobe, recall)
            step = max(1, nprobe // 16)
            while high - low > step:  # low falls short (or is 0), high reaches aim
                middle = (low + high) // 2
                recall = measure(middle)
                if recall >= aim:
                    high, best = middle, (middle, recall)
                else:
                    low = middle
            set_nprobe(best[0])
            return best
        nprobe *= 2
    best_recall = max(r for _, r in tried)
    nprobe, recall = next((p, r) for p, r in tried if r >= best_recall - 0.005)
    set_nprobe(nprobe)
    return nprobe, recall


def _pick(rng: np.random.Generator, ids: np.ndarray) -> np.ndarray:
    count = min(len(ids), CALIBRATION_QUERIES)
    return ids[np.sort(rng.choice(len(ids), count, replace=False))]


class _TopK:
    """Running exact top-k (inner product) of a few queries over chunks of vectors."""

    def __init__(self, queries: int, k: int = K) -> None:
        self.scores = np.full((queries, k), -np.inf, dtype=np.float32)
        self.ids = np.full((queries, k), -1, dtype=np.int64)
        self.k = k

    def update(self, scores: np.ndarray, ids: np.ndarray) -> None:
        all_scores = np.concatenate([self.scores, scores], axis=1)
        all_ids = np.concatenate([self.ids, np.broadcast_to(ids, scores.shape)], axis=1)
        keep = np.argpartition(-all_scores, self.k - 1, axis=1)[:, : self.k]
        scores_k = np.take_along_axis(all_scores, keep, axis=1)
        order = np.argsort(-scores_k, axis=1)
        self.scores = np.take_along_axis(scores_k, order, axis=1)
        self.ids = np.take_along_axis(np.take_along_axis(all_ids, keep, axis=1), order, axis=1)
