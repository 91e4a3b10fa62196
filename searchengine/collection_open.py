"""Opening a collection: its name checked, its catalog found or made, its identity checked.

``Collection.open`` hands over here. Nothing is left behind by an open that fails: a
new collection is written only once its model is known to load (a bad spec must not
leave a collection that refuses every later run for being "built with" it), and a
catalog or model opened here is closed again on any error.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from searchengine.backends import locate, read_location, write_location
from searchengine.catalog import Catalog, open_catalog
from searchengine.config import Config
from searchengine.errors import CollectionError, CollectionNotFoundError
from searchengine.identity import check_encoder_precision, check_identity
from searchengine.models import Encoder, load_encoder, parse_model_spec
from searchengine.precision import recorded, refuse_mixing
from searchengine.writable import check_can_make

__all__ = ["opened"]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def opened(
    name: str, config: Config, create: bool, model: str | None, encoder: Encoder | None
) -> tuple[Path, Catalog, Encoder | None]:
    """Collection ``name``'s folder, its catalog (made where ``create``) and the encoder
    (``encoder``, or the one loaded to make a new collection); see ``Collection.open``.

    Raises:
        CollectionNotFoundError: it does not exist and ``create`` is false.
        ModelMismatchError: ``model`` or ``encoder`` differs from the collection's model.
    """
    if config.engine == "ray":  # said before anything is created or loaded
        from searchengine.ingest.ray_cluster import check_engine

        check_engine(config.ray_address)
    if not _NAME_RE.match(name):
        raise CollectionError(
            f"invalid collection name {name!r}: use letters, digits, '.', '_' or '-'"
        )
    folder = config.home / name
    missing = CollectionNotFoundError(
        f"no collection {name!r} in {config.home.resolve()}"
        + (" or in its database" if config.database_url else "")
        + f"; create it with `searchengine index PATH --collection {name}`, or point "
        "--index-dir / SEARCHENGINE_HOME (or --database-url) at where it is"
    )
    location = locate(name, folder, config.database_url)
    if config.lock_timeout_s is not None:
        location = replace(location, lock_timeout_s=config.lock_timeout_s)
    catalog = open_catalog(folder, location, False)
    loaded = None
    if catalog is None and create:
        if not location.shared:  # said before a model loads for nothing
            check_can_make(folder)
        # Nothing is written before the model is known to load: a bad spec must not
        # leave a collection that refuses every later run for being "built with" it.
        if encoder is None:
            spec = parse_model_spec(model or config.model)
            encoder = loaded = load_encoder(spec, config.device, config.runtime)
        try:
            catalog = open_catalog(folder, location, True)
        except BaseException:
            if loaded is not None:
                loaded.close()
            raise
    if catalog is None:
        raise missing
    try:
        check_identity(catalog, name, config, model, encoder, create)
        stored, check = recorded(catalog.get_meta)
        if config.precision is not None:
            has_vectors = catalog.ok_count() > 0
            refuse_mixing(name, stored, check, has_vectors, config.precision)
        check_encoder_precision(name, stored, encoder)
        if catalog.shared and (create or folder.exists()) and read_location(folder) is None:
            folder.mkdir(parents=True, exist_ok=True)  # a reader on a new host: nothing
            write_location(folder, catalog.location)
    except BaseException:
        catalog.close()
        if loaded is not None:
            loaded.close()
        raise
    return folder, catalog, encoder
