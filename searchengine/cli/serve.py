"""The ``serve`` command: the web page and JSON API for one collection."""

from __future__ import annotations

import os
from pathlib import Path

import click

from searchengine.cli.common import collection_options, echo_store_notes, errors, open_collection
from searchengine.models.clipseg import DEFAULT_SEG_MODEL
from searchengine.values import DEVICES

MISSING_EXTRA = (
    "the web server needs the server extra: pip install 'searchengine[server]' "
    "(fastapi, uvicorn, python-multipart)"
)


@click.command()
@collection_options
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Anything but a loopback address needs --token.",
)
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True)
@click.option(
    "--token",
    envvar="SEARCHENGINE_TOKEN",
    default=None,
    help="Require this token on every API call [env SEARCHENGINE_TOKEN, which keeps it "
    "out of the process list]. 16+ characters of A-Z a-z 0-9 . _ ~ -",
)
@click.option(
    "--rerank-model",
    default=None,
    metavar="MODEL",
    help="Model the page's rerank option uses [default: the collection's model].",
)
@click.option(
    "--caption-model",
    default=None,
    metavar="MODEL",
    help="BLIP model for captions [default: Salesforce/blip-image-captioning-base].",
)
@click.option(
    "--where-model",
    default=None,
    metavar="NAME",
    help="CLIPSeg model of the page's 'Where is it?' [default: CIDAS/clipseg-rd64-refined; "
    "toy-seg for the toy world].",
)
@click.option("--device", type=click.Choice(DEVICES), default=None)
def serve(
    collection: str,
    index_dir: Path | None,
    database_url: str | None,
    host: str,
    port: int,
    token: str | None,
    rerank_model: str | None,
    caption_model: str | None,
    where_model: str | None,
    device: str | None,
) -> None:
    """Search a collection from a web page (and a JSON API) on this machine.

    The collection's model and index are loaded once, before the server starts, so
    every query is warm; the rerank and caption models load in the background (the
    page says when they are ready). Files are served by catalog id only. Ctrl-C stops
    the server.

    \b
    Examples:
      searchengine serve                                  # http://127.0.0.1:8765/
      searchengine serve --collection family --port 9000
      SEARCHENGINE_TOKEN=$(python -c 'import secrets; print(secrets.token_urlsafe(24))') \\
          searchengine serve --host 0.0.0.0               # reachable from the network
    """
    from searchengine.models.loading import HUB_TIMEOUT

    # The hub client reads this once, on import: a hub that stops answering costs
    # seconds per file, not its 10 s default (a value the user set wins).
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", f"{HUB_TIMEOUT:g}")
    from searchengine.backends import SERVE_LOCK_TIMEOUT_S

    try:
        from searchengine.server import check_binding, create_app
        from searchengine.server.http import listening_socket, run
    except ImportError as exc:
        raise click.ClickException(f"{MISSING_EXTRA} ({exc.name} is missing)") from exc

    with errors():
        check_binding(host, token)  # before the model loads: a refusal comes at once
        sock = listening_socket(host, port)
    # A table locked by maintenance answers 503 in seconds, not after a command's 30 s.
    opened = open_collection(
        collection, index_dir, database_url, None, device, lock_timeout_s=SERVE_LOCK_TIMEOUT_S
    )
    with sock, errors(), opened as coll:
        click.echo(f"loading {coll.model} for collection {coll.name!r}…", err=True)
        app = create_app(
            coll,
            token=token,
            host=host,
            rerank_model=rerank_model,
            caption_model=caption_model,
            warm_up=True,
            where_model=where_model or DEFAULT_SEG_MODEL,
        )
        echo_store_notes(coll)  # a slow build from the shared catalog: how to keep it
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{port}/" + (f"#token={token}" if token else "")
        click.echo(f"serving {coll.name!r} at {url}  (Ctrl-C stops)", err=True)
        run(app, sock)
