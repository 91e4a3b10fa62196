"""``searchengine index``: embed folders of photos into a collection."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import click

from searchengine.cli.common import (
    TqdmProgress,
    collection_options,
    device_option,
    errors,
    make_config,
    open_for_ingest,
    runtime_option,
)
from searchengine.ingest.exclude import clean_pattern
from searchengine.values import ENGINES, PRECISIONS


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@collection_options
@click.option(
    "--model",
    "-m",
    "models",
    multiple=True,
    help="Model spec of the collection [env SEARCHENGINE_MODEL; default ViT-B-32:openai]. "
    "Repeat to also cache reranking vectors of more models.",
)
@device_option
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Images per model call [default: 256 on CUDA; on CPU 16 over all lanes, else 32].",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Decode threads; with ONNX on a CPU, lanes that each decode and run the model "
    "(at most one per core) [default: one per core, at most 8]. With --engine ray: at "
    "most this many actors [default: one per GPU, else one per CPU of the cluster].",
)
@runtime_option
@click.option(
    "--index-memory",
    type=click.FloatRange(min=1, min_open=False),
    default=None,
    metavar="MB",
    help="Memory budget of the vector index [env SEARCHENGINE_INDEX_MEMORY_MB; default: "
    "none]. A collection over it gets compressed vectors and somewhat lower recall.",
)
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default=None,
    help="Image tower of a new collection [env SEARCHENGINE_PRECISION; default fp32]. "
    "int8 embeds ~2x faster on a CPU; it is checked against fp32 on the collection's "
    "own photos first and refused (fp32 used) if the vectors differ too much.",
)
@click.option(
    "--engine",
    type=click.Choice(ENGINES),
    default=None,
    help="Where files are decoded and embedded [env SEARCHENGINE_ENGINE; default local: "
    "this process]. ray: Ray Data tasks and actors (one model each, a GPU each where "
    "the cluster has GPUs); this process still plans and writes.",
)
@click.option(
    "--ray-address",
    default=None,
    metavar="ADDRESS",
    help="With --engine ray: the cluster to join, HOST:PORT or ray://HOST:PORT [env "
    "SEARCHENGINE_RAY_ADDRESS; default auto: start Ray on this machine]. Every node must "
    "see the photos at the same paths.",
)
@click.option(
    "--exclude",
    "exclude",
    multiple=True,
    metavar="PATTERN",
    help="Leave out files and folders that match, in this run and every later one (the "
    "collection keeps the patterns; `status` lists them). A name or glob matches at any "
    "depth ('Raw', '*.tif'), a pattern with a / matches the path below the folder "
    "('2019/private'); case does not matter. Photos already indexed that match leave the "
    "collection; the files stay. Repeatable.",
)
@click.option(
    "--no-exclude",
    "no_exclude",
    multiple=True,
    metavar="PATTERN",
    help="Stop leaving out what a saved --exclude PATTERN matches. Repeatable.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def index(
    paths: Sequence[Path],
    collection: str,
    index_dir: Path | None,
    database_url: str | None,
    models: tuple[str, ...],
    device: str | None,
    batch_size: int | None,
    workers: int | None,
    runtime: str | None,
    index_memory: float | None,
    precision: str | None,
    engine: str | None,
    ray_address: str | None,
    exclude: tuple[str, ...],
    no_exclude: tuple[str, ...],
    as_json: bool,
) -> None:
    """Embed every image under PATHS into a collection.

    Re-running embeds only new or changed files, follows renames and moves
    without re-embedding, and drops deleted files. With no PATHS, re-scans the
    folders the collection already has.

    \b
    Examples:
      searchengine index ~/Pictures
      searchengine index ~/Pictures ~/Phone --collection family --model ViT-B-32:openai
      searchengine index --collection family          # refresh known folders
      searchengine index ~/Pictures --collection fast --precision int8
      searchengine index ~/Pictures --exclude Screenshots --exclude '*.tif'
      searchengine index ~/Pictures -m ViT-B-32:openai \\
          -m hf-hub:UCSC-VLAA/ViT-L-14-CLIPS-Recap-DataComp-1B   # + rerank vectors
      searchengine index /mnt/photos -c team --database-url postgresql://me@db/photos
      searchengine index /shared/photos --engine ray --ray-address 10.0.0.1:6379
    """
    for path in paths:  # before anything is created; a broken link is a file to record
        if not os.path.lexists(path):
            raise click.BadParameter(f"no such file or folder: {path}", param_hint="PATHS")
    with errors(resumes=True):
        for pattern in exclude:  # said before a model loads
            clean_pattern(pattern)
        model = models[0] if models else None
        config = make_config(
            index_dir,
            database_url,
            model=model,
            device=device,
            batch_size=batch_size,
            workers=workers,
            runtime=runtime,
            index_memory_mb=index_memory,
            precision=precision,
            engine=engine,
            ray_address=ray_address,
        )
        with open_for_ingest(collection, config, model) as coll:
            report = coll.index(
                paths,
                progress=TqdmProgress("indexing"),
                exclude=exclude,
                no_exclude=no_exclude,
                build_progress=TqdmProgress("this host's index, from the catalog", unit="vec"),
            )
            precomputed = {
                extra: coll.precompute(extra, progress=TqdmProgress(f"caching {extra}"))
                for extra in models[1:]
            }
    for note in report.notes:
        click.echo(note, err=True)
    if as_json:
        payload = report.__dict__ | {"embedded": report.embedded, "precomputed": precomputed}
        click.echo(json.dumps(payload, indent=2))
        return
    rate = f" ({report.embedded / report.seconds:.1f} images/s)" if report.embedded else ""
    click.echo(
        f"added {report.added}, updated {report.updated}, moved {report.moved}, "
        f"unchanged {report.unchanged}, removed {report.removed}, failed {report.failed}"
        + (f", excluded {report.excluded}" if report.excluded else "")
        + (f", not read now {len(report.unread)}" if report.unread else "")
        + f" in {report.seconds:.1f} s{rate}"
    )
    for extra, count in precomputed.items():
        click.echo(f"cached {count} new {extra} vectors for reranking")
    if report.failed:
        click.echo(f"see why: searchengine status --failed --collection {collection}", err=True)
    if report.warned:
        click.echo(
            f"{report.warned} indexed with a warning (damaged or odd): "
            f"searchengine status --warnings --collection {collection}",
            err=True,
        )
