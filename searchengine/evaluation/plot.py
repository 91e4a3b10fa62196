"""R@K curves as a PNG, with matplotlib (the optional ``plot`` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from searchengine.errors import DatasetError

if TYPE_CHECKING:
    from searchengine.evaluation.bench import BenchReport

__all__ = ["matplotlib_available", "plot_curves"]


def matplotlib_available() -> bool:
    """Whether ``--plot`` can work here."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot_curves(report: BenchReport, path: Path) -> Path:
    """Two panels (text->image, image->text), one R@K line per model, log-scaled K.

    Raises:
        DatasetError: matplotlib is missing or the report has no curves.
    """
    if not matplotlib_available():
        raise DatasetError(
            "--plot needs matplotlib: pip install 'searchengine[plot]' (or pip install matplotlib)"
        )
    if not all(r.curves for r in report.results):
        raise DatasetError("no R@K curves in this report; run the bench with curves=True")
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    titles = {"t2i": "text → image", "i2t": "image → text"}
    for axis, (direction, title) in zip(axes, titles.items(), strict=True):
        for result in report.results:
            curve = result.curves[direction]
            ks = sorted(curve)
            axis.plot(ks, [100 * curve[k] for k in ks], marker="o", label=result.model)
        axis.set_xscale("log")
        ticks = sorted({k for r in report.results for k in r.curves[direction]})
        axis.set_xticks(ticks, [str(k) for k in ticks])
        axis.minorticks_off()
        axis.set_xlabel("K")
        axis.set_title(title)
        axis.grid(True, alpha=0.3)
    axes[0].set_ylabel("recall@K (%)")
    axes[0].legend(fontsize="small")
    figure.suptitle(f"{report.dataset}: {report.images} images, {report.captions} captions")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
