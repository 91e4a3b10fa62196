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
        if s.unavailable:
            click.echo(f"{s.name:<{width}}  unavailable: {s.unavailable}")
            continue
        failed = f", {s.failed} failed" if s.failed else ""
        click.echo(
            f"{s.name:<{width}}  {s.images} images{failed}  {common.human_size(s.size_bytes)}"
            f"  {s.model or '-'}"
        )


@click.command()
@click.option("--collection", "-c", required=True, help="Name of the collection to remove.")
@common.index_dir_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--local",
    is_flag=True,
    help="Only this host's folder: a catalog on a server stays for the hosts that share "
    "it (the server is not contacted).",
)
def remove(collection: str, index_dir: Path | None, yes: bool, local: bool) -> None:
    """Delete a collection: its catalog, vector index and caches.

    The photos themselves are never touched. Asks first unless --yes; refused while
    the collection is being indexed. A catalog on a PostgreSQL server is dropped
    there, for every host that shares it, unless --local.

    \b
    Examples:
      searchengine remove --collection old-phone
      searchengine remove -c scratch --yes
      searchengine remove -c team --local    # this host leaves; the others keep it
    """
    from searchengine.home import (
        catalog_location,
        collection_summaries,
        list_collections,
        remove_collection,
    )

    with common.errors():
        config = common.make_config(index_dir)
        if not yes and collection in list_collections(config):
            s = next((s for s in collection_summaries(config) if s.name == collection), None)
            location = catalog_location(collection, config)
            if s is None:  # a server catalog already dropped (from another host)
                what = "its catalog is gone"
            elif s.unavailable:
                what = f"catalog unavailable, {common.human_size(s.size_bytes)}"
            else:
                what = f"{s.images} images, {common.human_size(s.size_bytes)}"
            folder = (config.home / collection).resolve()
            if not location.shared:
                server = ""
            elif local:
                server = f"; its catalog on {location.shown} stays for the hosts that share it"
            else:
                server = (
                    f" and its catalog on {location.shown} (schema {location.schema}), for "
                    "every host that shares it"
                )
            click.confirm(
                f"remove collection {collection!r} ({what}) in {folder}{server}? The photos stay",
                abort=True,
            )
        removed = remove_collection(collection, config, local=local)
    if local:
        click.echo(f"removed this host's folder of collection {collection!r} ({removed})")
    else:
        click.echo(f"removed collection {collection!r} ({removed})")
