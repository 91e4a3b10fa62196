"""Collection management commands: collections (list them), remove (delete one)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from searchengine.cli import common
from searchengine.fsutil import human_size

if TYPE_CHECKING:
    from searchengine.folders import ForgetReport


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
            f"{s.name:<{width}}  {s.images} images{failed}  {human_size(s.size_bytes)}"
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
@click.option(
    "--folder",
    "folders",
    multiple=True,
    metavar="PATH",
    help="Take only this folder and the photos under it out of the collection (it is "
    "no longer walked by `index`); repeatable.",
)
@click.option("--json", "as_json", is_flag=True, help="With --folder: print what went as JSON.")
def remove(
    collection: str,
    index_dir: Path | None,
    yes: bool,
    local: bool,
    folders: tuple[str, ...],
    as_json: bool,
) -> None:
    """Delete a collection (its catalog, vector index and caches), or one of its folders.

    The photos themselves are never touched. Asks first unless --yes; refused while
    the collection is being indexed. A catalog on a PostgreSQL server is dropped
    there, for every host that shares it, unless --local. With --folder, only that
    folder's photos leave the collection, for every host that shares it.

    \b
    Examples:
      searchengine remove --collection old-phone
      searchengine remove -c scratch --yes
      searchengine remove -c team --local    # this host leaves; the others keep it
      searchengine remove -c default --folder ~/Downloads   # the folder leaves
    """
    if folders:
        if local:
            raise click.UsageError("--folder takes photos out for every host; drop --local")
        _remove_folders(collection, index_dir, folders, yes, as_json)
        return
    if as_json:
        raise click.UsageError("--json goes with --folder")
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
                what = f"catalog unavailable, {human_size(s.size_bytes)}"
            else:
                what = f"{s.images} images, {human_size(s.size_bytes)}"
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


def _remove_folders(
    collection: str, index_dir: Path | None, folders: tuple[str, ...], yes: bool, as_json: bool
) -> None:
    """``remove --folder``: what would go is checked for every folder before any goes."""
    with common.errors(), common.open_collection(collection, index_dir, None, None, None) as coll:
        going = [coll.forgetting(folder) for folder in folders]
        if not yes:
            names = ", ".join(common.terminal_path(f) for r in going for f in r.folders)
            photos = sum(r.images for r in going)
            click.confirm(
                f"take {names} out of collection {collection!r} ({photos} photos)? The "
                "files stay on disk",
                abort=True,
            )
        done: list[ForgetReport] = []
        gone: set[str] = set()
        for folder, preview in zip(folders, going, strict=True):
            if not gone.issuperset(preview.folders):  # not named twice, or inside another
                done.append(coll.forget(folder))
                gone.update(done[-1].folders)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in done], indent=2))
        return
    for report in done:
        for folder in report.folders:
            click.echo(f"took {common.terminal_path(folder)} out of collection {collection!r}")
        click.echo(f"{report.images} photos left the collection; the files stay on disk")
