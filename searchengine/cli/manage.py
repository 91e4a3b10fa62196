"""Collection management commands: collections (list them), remove (delete one)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from searchengine.cli import common


@click.command()
@common.index_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def collections(index_dir: Path | None, as_json: bool) -> None:
    """List every collection: its model, images, failed files and size on disk.

    \b
    Examples:
      searchengine collections
      searchengine collections --index-dir /data/indexes --json
    """
    from searchengine.home import collection_summaries

    with common.errors():
        found = collection_summaries(common.make_config(index_dir))
    if as_json:
        click.echo(json.dumps([s.to_dict() for s in found], indent=2))
        return
    if not found:
        click.echo("no collections; make one with: searchengine index PATH", err=True)
        return
    width = max(len(s.name) for s in found)
    for s in found:
        failed = f", {s.failed} failed" if s.failed else ""
        click.echo(
            f"{s.name:<{width}}  {s.images} images{failed}  {common.human_size(s.size_bytes)}"
            f"  {s.model or '-'}"
        )


@click.command()
@click.option("--collection", "-c", required=True, help="Name of the collection to remove.")
@common.index_dir_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def remove(collection: str, index_dir: Path | None, yes: bool) -> None:
    """Delete a collection: its catalog, vector index and caches.

    The photos themselves are never touched. Asks first unless --yes; refused while
    the collection is being indexed. A catalog on a PostgreSQL server is dropped
    there, for every host that shares it.

    \b
    Examples:
      searchengine remove --collection old-phone
      searchengine remove -c scratch --yes
    """
    from searchengine.backends import locate
    from searchengine.home import collection_summaries, remove_collection

    with common.errors():
        config = common.make_config(index_dir)
        found = {s.name: s for s in collection_summaries(config)}
        if collection in found and not yes:
            s = found[collection]
            location = locate(collection, config.home / collection, config.database_url)
            server = (
                f" and its catalog on {location.shown} (schema {location.schema}), for "
                "every host that shares it"
                if location.shared
                else ""
            )
            click.confirm(
                f"remove collection {s.name!r} ({s.images} images, "
                f"{common.human_size(s.size_bytes)}) in {s.folder}{server}? The photos stay",
                abort=True,
            )
        folder = remove_collection(collection, config)
    click.echo(f"removed collection {collection!r} ({folder})")
