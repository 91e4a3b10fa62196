"""Collection commands: search, similar, status (``index`` is in ``cli.index``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from searchengine.cli.common import (
    OWN_MODEL,
    TqdmProgress,
    collection_options,
    device_option,
    echo_store_notes,
    errors,
    filter_options,
    nothing_indexed,
    open_collection,
    open_for_example,
    open_for_query,
    print_results,
    runtime_option,
    terminal_path,
    top_k_option,
)
from searchengine.cli.where import print_located, region_options, where_options
from searchengine.fsutil import human_size
from searchengine.models.blip import DEFAULT_CAPTION_MODEL
from searchengine.values import SORTS


@click.command()
@click.argument("query")
@collection_options
@top_k_option
@click.option(
    "--plus",
    multiple=True,
    metavar="[W:]TERM",
    help="Add a text or an example image (a file path); repeatable.",
)
@click.option(
    "--minus",
    multiple=True,
    metavar="[W:]TERM",
    help="Subtract a text or an example image; repeatable.",
)
@click.option(
    "--rerank",
    is_flag=False,
    flag_value=OWN_MODEL,
    default=None,
    metavar="[MODEL]",
    help="Rank by CLIPScore, under MODEL (default: the collection's model).",
)
@click.option(
    "--candidates",
    type=click.IntRange(min=1, max=100000),
    default=None,
    help="First-stage candidates to rescore [default: max(100, k)].",
)
@click.option(
    "--min-score",
    type=click.FloatRange(min=0.0, max=2.5),
    default=None,
    help="Drop results with a CLIPScore below this (0 to 2.5).",
)
@click.option(
    "--caption",
    is_flag=False,
    flag_value=DEFAULT_CAPTION_MODEL,
    default=None,
    metavar="[MODEL]",
    help=f"Caption each result with BLIP MODEL (default: {DEFAULT_CAPTION_MODEL}); "
    "captions are stored and reused.",
)
@filter_options
@click.option(
    "--sort",
    type=click.Choice(SORTS),
    default="relevance",
    show_default=True,
    help="Order of the results: date is newest first.",
)
@click.option(
    "--refresh",
    is_flag=True,
    help="First index what changed in the collection's folders (new, changed, moved and "
    "deleted photos), in this same process: adding photos and finding them is one command.",
)
@click.option("--model", "-m", default=None, help="Must match the collection's model if given.")
@where_options
@device_option
@runtime_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list with every score.")
def search(
    query: str,
    collection: str,
    index_dir: Path | None,
    database_url: str | None,
    k: int,
    plus: tuple[str, ...],
    minus: tuple[str, ...],
    rerank: str | None,
    candidates: int | None,
    min_score: float | None,
    caption: str | None,
    path_glob: str | None,
    after: str | None,
    before: str | None,
    min_width: int | None,
    min_height: int | None,
    orientation: str | None,
    sort: str,
    refresh: bool,
    model: str | None,
    where: bool,
    where_model: str,
    out: Path | None,
    device: str | None,
    runtime: str | None,
    as_json: bool,
) -> None:
    """Rank a collection's images by a text QUERY.

    Each result shows the first-stage cosine and the CLIPScore (2.5 * max(cos, 0)
    for "A photo depicts QUERY"). A --plus/--minus term naming an existing file is an
    example image, anything else is text; "W:term" weights it (e.g. 0.5:sunset.jpg).
    --where adds where in each photo QUERY is (CLIPSeg): found, box and peak.

    \b
    Examples:
      searchengine search "kids building a sandcastle"
      searchengine search "a red car at night" -k 20 --json
      searchengine search "a beach" --plus ./sunset.jpg --minus people
      searchengine search "a dog" --rerank hf-hub:UCSC-VLAA/ViT-L-14-CLIPS-Recap-DataComp-1B
      searchengine search "a dog" --caption        # + a BLIP caption per result
      searchengine search "birthday cake" --after 2021 --before 2022-06 --sort date
      searchengine search "mountains" --path "*/holidays/*" --orientation landscape
      searchengine search "the photos from today" --refresh   # index new photos first
      searchengine search "a red kite" --where --out kites/   # + where it is, overlays
    """
    filtered = any(v is not None for v in (path_glob, after, before, min_width, min_height))
    # Rows, the index and the collection's own model are all most queries need: those
    # run without the SQL layer (``searchengine.oneshot``), which halves a cold search.
    plain = not (caption or model or filtered or orientation or database_url)
    plain = plain and rerank in (None, OWN_MODEL)
    opened = open_for_query(
        collection, index_dir, database_url, model, device, runtime, plain, refresh
    )
    with errors(), opened as coll:
        from searchengine.ranking import Filters

        if refresh and hasattr(coll, "update"):
            for note in coll.update(progress=TqdmProgress("indexing")).notes:
                click.echo(note, err=True)
        filters = Filters.parse(
            path=path_glob,
            after=after,
            before=before,
            min_width=min_width,
            min_height=min_height,
            orientation=orientation,
        )
        results = coll.search(
            query,
            k,
            plus=plus,
            minus=minus,
            rerank=True if rerank == OWN_MODEL else rerank,
            candidates=candidates,
            min_score=min_score,
            filters=filters,
            sort=sort,
            caption=caption,
        )
        why_none = None if results else nothing_indexed(coll, collection)
        echo_store_notes(coll)
    if where or out is not None:
        print_located(results, query, where_model, out, as_json, device)
        return
    print_results(results, as_json, why_none)


@click.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@collection_options
@top_k_option
@region_options
@device_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of results.")
def similar(
    image: Path,
    collection: str,
    index_dir: Path | None,
    database_url: str | None,
    k: int,
    region: tuple[int, int, int, int] | None,
    region_method: str,
    device: str | None,
    as_json: bool,
) -> None:
    """Find images like IMAGE (indexed or not; IMAGE itself is left out).

    With --region, find images like that part of IMAGE ("more like this part"):
    photos containing what the region shows rank above photos that merely share
    its background or the rest of IMAGE.

    \b
    Examples:
      searchengine similar ~/Pictures/beach.jpg
      searchengine similar ./query.png -k 5 --json
      searchengine similar ./street.jpg --region 120,40,380,300   # the dog, not the street
      searchengine similar ./street.jpg --region 120,40,380,300 --region-method crop
    """
    method = None if region is None else region_method
    with (
        errors(),
        open_for_example(collection, index_dir, database_url, device, image, method) as coll,
    ):
        results = coll.similar(image, k, region=region, region_method=region_method)
        why_none = None if results else nothing_indexed(coll, collection)
        echo_store_notes(coll)
    print_results(results, as_json, why_none)


@click.command()
@collection_options
@click.option("--failed", is_flag=True, help="List the files that could not be indexed.")
@click.option(
    "--warnings",
    "warned",
    is_flag=True,
    help="List the files indexed with a warning (a RAW file cut short, corrupt EXIF ...).",
)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def status(
    collection: str,
    index_dir: Path | None,
    database_url: str | None,
    failed: bool,
    warned: bool,
    as_json: bool,
) -> None:
    """Show a collection: model, image count, index type, catalog, size, failures,
    files indexed with a warning.

    \b
    Examples:
      searchengine status
      searchengine status --failed --collection family
      searchengine status --warnings   # indexed, but damaged or odd: worth a look
      searchengine status -c team --database-url postgresql://me@db/photos --json
    """
    with errors(), open_collection(collection, index_dir, database_url, None, None) as coll:
        info = coll.status()
        failures = coll.failures() if failed else []
        warnings = coll.warnings() if warned else []
    if as_json:
        payload: dict[str, Any] = info.to_dict()
        if failed:
            payload["failures"] = [{"path": r.path, "error": r.error} for r in failures]
        if warned:
            payload["warnings"] = [{"path": r.path, "warning": r.error} for r in warnings]
        click.echo(json.dumps(payload, indent=2))
        return
    if failed or warned:
        for r in [*failures, *warnings]:
            click.echo(f"{terminal_path(r.path)}\t{r.error}")
        if failed and not failures:
            click.echo("no failed files", err=True)
        if warned and not warnings:
            click.echo("no files indexed with warnings", err=True)
        return
    accelerated = f" + fast-scan {info.accelerator}" if info.accelerator else ""
    waits = ""
    if info.waiting:
        from searchengine.ingest.awaiting import waiting_note  # not at every command's start

        waits = f" ({waiting_note(info.waiting)})"
    checked = f" ({info.precision_check})" if info.precision_check else ""
    folders = ", ".join(
        terminal_path(r)
        + (f" ({terminal_path(info.folder_notes[r])})" if r in info.folder_notes else "")
        for r in info.roots
    )
    click.echo(
        f"collection  {info.name}\nfolder      {info.folder}\nmodel       {info.model}"
        f"\nprecision   {info.precision}{checked}"
        f"\ndimension   {info.dim or '-'}\nindex type  {info.index_type}{accelerated}"
        f"\nimages      {info.images}\nfailed      {info.failed}{waits}"
        + (f"\nwarnings    {info.warned} (status --warnings)" if info.warned else "")
        + f"\nvectors     {info.vectors}"
        f"\ncatalog     {info.backend}: {info.catalog} ({human_size(info.catalog_bytes)})"
        f"\nsize        {human_size(info.size_bytes)}\nfolders     {folders or '-'}"
    )
    if info.exclude:
        click.echo(f"excluded    {', '.join(terminal_path(p) for p in info.exclude)}")
    if info.read_only:
        click.echo(f"writable    no: {info.read_only} (searching works; index is refused)")
    if info.damaged:
        click.echo(f"damaged     {info.damaged}")
