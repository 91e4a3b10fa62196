"""Files that failed for want of an optional decoder, read again once it is installed.

An unchanged file is never read again, so without this a HEIC photo named ``.jpg``
met without pillow-heif, or a RAW file named directly (or met by a Ray worker) without
rawpy, stayed failed after the decoder was installed, although ``index`` said that the
next run would add it. The catalog records which decoders failed files wait for
(``MetaKey.AWAITING``: "heif", "raw", comma-separated), so that a run looks for such
files only when some wait: an unchanged re-run reads one meta row more.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from searchengine.ingest.scan import FileEntry
from searchengine.values import MetaKey

if TYPE_CHECKING:
    from searchengine.catalog import Catalog
    from searchengine.ingest.plan import IngestPlan
    from searchengine.ingest.write import IndexReport


def _needs() -> dict[str, str]:
    """The optional decoders, by name, and the reason of a file failed for want of it
    (imported here: a cold search imports this module, and needs neither)."""
    from searchengine.ingest.raw import NEEDS_RAWPY
    from searchengine.ingest.reasons import NEEDS_PILLOW_HEIF

    return {"heif": NEEDS_PILLOW_HEIF, "raw": NEEDS_RAWPY}


def _installed(name: str) -> bool:
    from searchengine.ingest.decode import heif_installed
    from searchengine.ingest.raw import raw_available

    return heif_installed() if name == "heif" else raw_available()


def decoder_awaited(recorded: str | None) -> bool:
    """Whether, by the catalog's record, failed files wait for a decoder that is
    installed now (``search --refresh``'s quick check: the full path reads them)."""
    return any(_installed(name) for name in (recorded or "").split(",") if name in _needs())


def retry_awaiting(catalog: Catalog, diff: IngestPlan) -> tuple[str | None, set[str]]:
    """Plan again the unchanged files of ``diff`` that failed for want of a decoder that
    is installed now; returns the catalog's record and the decoders awaited before
    this run (for ``record_awaiting``). Without a record (a collection made before
    it), every decoder is looked for once."""
    recorded = catalog.get_meta(MetaKey.AWAITING)
    needs = _needs()
    awaiting = set(needs) if recorded is None else {n for n in recorded.split(",") if n in needs}
    ready = [needs[name] for name in sorted(awaiting) if _installed(name)]
    if ready:
        skip = set(diff.missing) | set(diff.kept) | set(diff.excluded)
        skip |= {entry.path for entry in diff.candidates}
        for path in catalog.failed_with(ready):
            if path in diff.known and path not in skip:
                _, size, mtime_ns = diff.known[path]
                diff.candidates.append(FileEntry(path, size, mtime_ns))
                diff.unchanged -= 1
    return recorded, awaiting


def record_awaiting(
    catalog: Catalog, recorded: str | None, awaiting: set[str], report: IndexReport
) -> None:
    """After a run that went through: record which decoders failed files still wait for."""
    needs = _needs()
    written = {
        name for name, reason in needs.items() if any(r == reason for _, r in report.failures)
    }
    if not awaiting and not written and recorded is not None:
        return  # nothing waited, nothing new waits: the unchanged re-run's case
    still = [name for name, reason in needs.items() if catalog.failed_with([reason])]
    if ",".join(still) != recorded:
        catalog.set_meta({MetaKey.AWAITING: ",".join(still)})


def waiting(catalog: Catalog) -> dict[str, int]:
    """How many failed files wait for each optional decoder, by its extra's name
    (``heif``, ``raw``: ``pip install 'searchengine[NAME]'``); for ``status``."""
    found = {name: len(catalog.failed_with([reason])) for name, reason in _needs().items()}
    return {name: n for name, n in found.items() if n}


def waiting_note(counts: dict[str, int]) -> str:
    """``status``'s words for ``waiting``: "3 wait for rawpy (pip install ...)"."""
    package = {"heif": "pillow-heif", "raw": "rawpy"}
    return "; ".join(
        f"{n} wait for {package[name]}: pip install 'searchengine[{name}]'"
        for name, n in sorted(counts.items())
    )
