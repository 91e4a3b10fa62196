"""What every command shares: error mapping, common options, progress, output."""

from __future__ import annotations

import errno
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from searchengine.config import DEFAULT_COLLECTION, Config
from searchengine.errors import ConfigError, SearchEngineError
from searchengine.fsutil import display_path
from searchengine.values import DEVICES, ORIENTATIONS, RUNTIMES

if TYPE_CHECKING:
    from searchengine.collection import Collection
    from searchengine.models.onnx import OnnxClipEncoder
    from searchengine.oneshot import OneShot
    from searchengine.ranking import SearchResult
    from searchengine.warmup import Warmup

F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def errors(resumes: bool = False) -> Iterator[None]:
    """Library errors become one clear line and exit status 1; Ctrl-C exits 130.
    ``resumes``: a command that keeps what it committed (``index``) says so at the end
    of a catalog server's line, and when to run it again."""
    try:
        yield
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from exc
    except SearchEngineError as exc:
        raise click.ClickException(str(exc)) from exc
    except Exception as exc:
        # The connection to a catalog server can also fail mid-run, and a disk can
        # fill or refuse a write anywhere: one line, too.
        if (message := _database_problem(exc, resumes) or _disk_problem(exc)) is None:
            raise
        raise click.ClickException(message) from exc
    except KeyboardInterrupt:
        click.echo(
            "interrupted; work done so far is saved, run the same command to resume", err=True
        )
        sys.exit(130)


def _database_problem(exc: Exception, resumes: bool = False) -> str | None:
    """One line for a lost catalog connection or a damaged catalog, or None for any other
    error."""
    sa_exc = sys.modules.get("sqlalchemy.exc")  # loaded only if a catalog was opened
    if sa_exc is None or not isinstance(exc, sa_exc.DBAPIError):
        return None
    from searchengine.catalog_errors import command_problem

    return command_problem(exc, resumes)


def _disk_problem(exc: Exception) -> str | None:
    """One line for a write the disk refused (full, read-only, not permitted), or None."""
    from searchengine.writable import no_space_error, no_space_message

    if not isinstance(exc, OSError):
        return None
    if no_space_error(exc):
        return no_space_message(exc, Path.cwd())
    if exc.filename is None or exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
        return None
    path = terminal_path(os.fsdecode(exc.filename))
    if exc.errno == errno.EROFS:
        return f"cannot write {path}: it is on a read-only filesystem; choose another place"
    return f"{exc.strerror}: {path}; check its permissions, or choose another place"


# Control characters in a name would split a result over lines, or drive the terminal
# (an escape sequence): each is shown as an escape instead, one line per result.
_CONTROLS = {
    **{c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F]},
    **{c: f"\\u{c:04x}" for c in range(0x80, 0xA0)},
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
}


def terminal_path(path: str) -> str:
    """A path printable on one terminal line: undecodable name bytes shown as ``\\xNN``,
    control characters (newline, tab, escape ...) as ``\\n``, ``\\t``, ``\\x1b``."""
    return display_path(path).translate(_CONTROLS)


def top_k_option(func: F) -> F:
    return click.option(
        "-k",
        "--top-k",
        "k",
        type=click.IntRange(min=1, max=10000),
        default=10,
        show_default=True,
        help="Number of results.",
    )(func)


def device_option(func: F) -> F:
    return click.option(
        "--device",
        type=click.Choice(DEVICES),
        default=None,
        help="Where to run the model [default auto: CUDA when present].",
    )(func)


def runtime_option(func: F) -> F:
    return click.option(
        "--runtime",
        type=click.Choice(RUNTIMES),
        default=None,
        help="How to run open_clip models [env SEARCHENGINE_RUNTIME; default auto: ONNX "
        "Runtime on a CPU (exported and checked against torch once per model), torch on "
        "CUDA].",
    )(func)


def index_dir_option(func: F) -> F:
    return click.option(
        "--index-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Folder holding collections [env SEARCHENGINE_HOME; default ./indexes].",
    )(func)


def database_url_option(func: F) -> F:
    return click.option(
        "--database-url",
        default=None,
        metavar="URL",
        help="Keep the catalog in this database, e.g. postgresql://USER@HOST/DB (needs "
        "the postgres extra) [env SEARCHENGINE_DATABASE_URL; default: a SQLite file in "
        "the collection's folder]. A password is better kept in PGPASSWORD or ~/.pgpass.",
    )(func)


def collection_options(func: F) -> F:
    func = database_url_option(func)
    func = index_dir_option(func)
    return click.option(
        "--collection",
        "-c",
        default=DEFAULT_COLLECTION,
        show_default=True,
        help="Collection name (a folder under the index dir).",
    )(func)


def make_config(
    index_dir: Path | None, database_url: str | None = None, **overrides: Any
) -> Config:
    return Config.from_env(home=index_dir, database_url=database_url, **overrides)


class TqdmProgress:
    """Progress bar on stderr (hidden when stderr is not a terminal)."""

    def __init__(self, desc: str, unit: str = "img") -> None:
        self.desc = desc
        self.unit = unit
        self._bar: Any = None

    def start(self, total: int) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=total, desc=self.desc, unit=self.unit, disable=None, file=sys.stderr)

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def print_results(
    results: Sequence[SearchResult], as_json: bool, why_none: str | None = None
) -> None:
    """Results a line each (or JSON); ``why_none`` says why there are none, where known."""
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in results], indent=2))
        return
    if not results:
        click.echo(f"no results: {why_none}" if why_none else "no results", err=True)
    elif results[0].weak:
        click.echo(
            "nothing matches well: even the best result scores below what a real match "
            "scores in this collection; these are only the closest",
            err=True,
        )
    for r in results:
        scores = f"cos {r.cosine:.4f}"
        if r.clip_score is not None:
            scores += f"  clip {r.clip_score:.4f}"
        if r.weak:
            scores += "  weak"
        click.echo(f"{r.score:.4f}  {terminal_path(r.path)}  ({scores})")
        for copy in r.copies:  # the same photo at another path
            click.echo(f"        also at {terminal_path(copy)}")
        if r.caption:
            click.echo(f"        {r.caption}")


OWN_MODEL = "__collection_model__"


def nothing_indexed(coll: Collection | OneShot, name: str) -> str | None:
    """Why a query of ``coll`` found nothing, where that is because it holds no photo."""
    if len(coll.vectors()) > 0:
        return None
    add = "searchengine index PATH" + (
        "" if name == DEFAULT_COLLECTION else f" --collection {name}"
    )
    return f"collection {name!r} has no photos indexed yet; add some with: {add}"


def filter_options(func: F) -> F:
    options = [
        click.option(
            "--path",
            "path_glob",
            default=None,
            metavar="DIR|GLOB",
            help="Only images under a folder or whose path matches a glob.",
        ),
        click.option(
            "--after",
            default=None,
            metavar="DATE",
            help="Only photos taken on/after YYYY[-MM[-DD]] (EXIF date, else mtime).",
        ),
        click.option(
            "--before",
            default=None,
            metavar="DATE",
            help="Only photos taken before YYYY[-MM[-DD]].",
        ),
        click.option(
            "--min-width",
            type=click.IntRange(min=1),
            default=None,
            help="Only images at least this wide (pixels).",
        ),
        click.option(
            "--min-height",
            type=click.IntRange(min=1),
            default=None,
            help="Only images at least this tall (pixels).",
        ),
        click.option(
            "--orientation",
            type=click.Choice(ORIENTATIONS),
            default=None,
            help="Only images of this orientation.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@contextmanager
def open_collection(
    collection: str,
    index_dir: Path | None,
    database_url: str | None,
    model: str | None,
    device: str | None,
    runtime: str | None = None,
    lock_timeout_s: float | None = None,
) -> Iterator[Collection]:
    """Open a collection for one command (``Config.lock_timeout_s``: see there)."""
    config = make_config(
        index_dir, database_url, device=device, runtime=runtime, lock_timeout_s=lock_timeout_s
    )
    with _open_warmed(collection, config, model, lambda: None) as coll:
        yield coll


@contextmanager
def open_for_query(
    collection: str,
    index_dir: Path | None,
    database_url: str | None,
    model: str | None,
    device: str | None,
    runtime: str | None,
    one_shot: bool,
    refresh: bool = False,
) -> Iterator[Collection | OneShot]:
    """Open a collection for one query: with ``one_shot`` (the query needs nothing but
    rows, the index and the collection's own model) without the SQL layer where the
    collection allows it (``searchengine.oneshot``), else as ``open_collection``.
    With ``refresh``, a collection whose folders changed is opened in full, to be
    updated first."""
    from searchengine.warmup import TextWarmup

    config = make_config(index_dir, database_url, device=device, runtime=runtime)
    warm = TextWarmup(config, collection)
    with _opened(collection, config, model, warm, one_shot, refresh) as coll:
        yield coll


@contextmanager
def open_for_example(
    collection: str,
    index_dir: Path | None,
    database_url: str | None,
    device: str | None,
    image: Path,
    region_method: str | None,
) -> Iterator[Collection | OneShot]:
    """``open_for_query`` for ``similar IMAGE``: the image tower opens meanwhile, where
    the command will run it (``searchengine.warmup.ExampleWarmup``); ``region_method``
    None for the whole image."""
    from searchengine.warmup import ExampleWarmup

    config = make_config(index_dir, database_url, device=device)
    warm = ExampleWarmup(config, collection, image, region_method)
    with _opened(collection, config, None, warm, True, False) as coll:
        yield coll


@contextmanager
def _opened(
    collection: str,
    config: Config,
    model: str | None,
    warm: Warmup,
    one_shot: bool,
    refresh: bool,
) -> Iterator[Collection | OneShot]:
    if one_shot:
        from searchengine.oneshot import OneShot  # faiss and sqlite3, while the tower opens

        quick = OneShot.open(config, collection, warm.encoder(), refresh=refresh)
        if quick is not None:
            with quick:
                yield quick
            return
    with _open_warmed(collection, config, model, warm.encoder) as coll:
        yield coll


@contextmanager
def open_for_ingest(collection: str, config: Config, model: str | None) -> Iterator[Collection]:
    """``Collection.open(create=True)`` for ``index``, its image tower opening meanwhile
    (``searchengine.warmup.IngestWarmup``)."""
    from searchengine.warmup import IngestWarmup

    warm = IngestWarmup(config, collection, model)
    with _open_warmed(collection, config, model, warm.encoder, create=True) as coll:
        yield coll


def _open_warmed(
    collection: str,
    config: Config,
    model: str | None,
    warmed: Callable[[], OnnxClipEncoder | None],
    *,
    create: bool = False,
) -> Collection:
    """``Collection.open`` with the encoder a warm-up makes: the SQL layer (what the
    warm-up overlaps) is imported before waiting for ``warmed``, and the encoder is
    closed if the collection does not open."""
    from searchengine.collection import Collection

    encoder = warmed()
    try:
        return Collection.open(collection, config, create=create, model=model, encoder=encoder)
    except BaseException:
        if encoder is not None:
            encoder.close()
        raise


def echo_store_notes(coll: object) -> None:
    """What the collection's store had to say while it read its index (stderr)."""
    store = getattr(coll, "store", None)  # the one-shot path has none: nothing to say
    for note in getattr(store, "notes", ()):
        click.echo(note, err=True)
