"""Measuring retrieval and caption quality: recall@K, MRR, CLIPScore, correlations.

The Python twins of ``searchengine bench``, ``score`` and ``caption-eval``::

    from searchengine.evaluation import load_dataset, run_bench

    report = run_bench(load_dataset("toy:1000:4242"), ["toy", "toy-large"])
    print(report.to_table())

Recall@K follows CLIP_benchmark exactly (see :mod:`searchengine.evaluation.metrics`).
torch and the models are imported only when something is computed.
"""

from searchengine.evaluation.bench import (
    BenchReport,
    EmbeddingCache,
    ModelResult,
    default_cache_dir,
    embed_dataset,
    run_bench,
)
from searchengine.evaluation.caption_eval import CaptionEvalReport, CaptionEvalRow, caption_eval
from searchengine.evaluation.caption_files import (
    RatedCaption,
    Ratings,
    load_captions,
    load_ratings,
    load_references,
)
from searchengine.evaluation.correlation import (
    Correlations,
    correlations,
    kendall_tau_c,
    pearson,
    spearman,
)
from searchengine.evaluation.datasets import (
    RetrievalDataset,
    load_csv,
    load_dataset,
    load_karpathy,
    load_sidecar,
    load_toy,
    toy_world,
)
from searchengine.evaluation.metrics import (
    RetrievalMetrics,
    image_to_text_hits,
    image_to_text_ranks,
    recall_at_k,
    retrieval_metrics,
    similarity,
    text_to_image_hits,
    text_to_image_ranks,
)
from searchengine.evaluation.pseudo import bench_collection
from searchengine.evaluation.scores import CaptionScore, ScoreTable, score_captions

__all__ = [
    "BenchReport",
    "CaptionEvalReport",
    "CaptionEvalRow",
    "CaptionScore",
    "Correlations",
    "EmbeddingCache",
    "ModelResult",
    "RatedCaption",
    "Ratings",
    "RetrievalDataset",
    "RetrievalMetrics",
    "ScoreTable",
    "bench_collection",
    "caption_eval",
    "correlations",
    "default_cache_dir",
    "embed_dataset",
    "image_to_text_hits",
    "image_to_text_ranks",
    "kendall_tau_c",
    "load_captions",
    "load_csv",
    "load_dataset",
    "load_karpathy",
    "load_ratings",
    "load_references",
    "load_sidecar",
    "load_toy",
    "pearson",
    "recall_at_k",
    "retrieval_metrics",
    "run_bench",
    "score_captions",
    "similarity",
    "spearman",
    "text_to_image_hits",
    "text_to_image_ranks",
    "toy_world",
]
