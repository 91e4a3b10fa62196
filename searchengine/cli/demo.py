"""``searchengine demo``: the offline first run on the shipped toy model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from searchengine.cli.common import (
    TqdmProgress,
    database_url_option,
    errors,
    index_dir_option,
    make_config,
)


@click.command()
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-photos"),
    show_default=True,
    help="Where to write the toy photos.",
)
@index_dir_option
@database_url_option
@click.option(
    "-n",
    "--images",
    type=click.IntRange(min=10, max=100000),
    default=300,
    show_default=True,
    help="How many toy photos to generate.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the demo's results as JSON.")
def demo(
    folder: Path, index_dir: Path | None, database_url: str | None, images: int, as_json: bool
) -> None:
    """Try searchengine offline: generate toy photos, index them, run a few queries.

    Uses the tiny `toy` model shipped with the package, so it needs no network and
    no GPU. The collection it builds is called "demo"; go on searching it afterwards.

    \b
    Examples:
      searchengine demo
      searchengine demo --dir /tmp/toy-photos -n 1000
      searchengine search "a green triangle" --collection demo
    """
    from searchengine.toy.demo import run_demo

    with errors():
        report = run_demo(
            folder,
            make_config(index_dir, database_url, device="cpu"),
            n=images,
            progress=TqdmProgress("indexing"),
        )
    if as_json:
        click.echo(
            json.dumps(
                {
                    "photos": str(report.photos.resolve()),
                    "collection": report.collection,
                    "folder": str(report.folder.resolve()),
                    "index": report.index.__dict__,
                    "answers": [
                        {
                            "query": a.query,
                            "results": [
                                r.to_dict() | {"shows": c}
                                for r, c in zip(a.results, a.captions, strict=True)
                            ],
                        }
                        for a in report.answers
                    ],
                },
                indent=2,
            )
        )
        return
    idx = report.index
    click.echo(f"{images} toy photos in {report.photos.resolve()}")
    click.echo(f"indexed: added {idx.added}, unchanged {idx.unchanged} in {idx.seconds:.1f} s\n")
    for answer in report.answers:
        click.echo(f'"{answer.query}"')
        for r, shows in zip(answer.results, answer.captions, strict=True):
            click.echo(f"  {r.score:.3f}  {os.path.relpath(r.path)}\n         shows: {shows}")
        click.echo("")
    click.echo(f'collection "{report.collection}" is in {report.folder.resolve()}; go on with:')
    click.echo(f'  searchengine search "a small orange cross" --collection {report.collection}')
