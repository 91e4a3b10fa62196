"""A collection's identity as its catalog records it: its name, model and image tower.

Stored data knows what made it; a collection opened with another model, an encoder
of another model or image tower, or a catalog of another collection is refused with
one line that says what to do, never silently mixed.
"""

from __future__ import annotations

from searchengine.catalog import Catalog
from searchengine.config import Config
from searchengine.errors import CollectionError, ModelMismatchError
from searchengine.models import Encoder, parse_model_spec
from searchengine.precision import FP32
from searchengine.values import MetaKey
from searchengine.vectors import EXACT


def check_identity(
    catalog: Catalog,
    name: str,
    config: Config,
    model: str | None,
    encoder: Encoder | None,
    create: bool,
) -> None:
    """Record a new collection's model, or refuse a model that is not the stored one."""
    stored_name = catalog.get_meta(MetaKey.NAME)
    if stored_name is not None and stored_name != name:
        raise CollectionError(
            f"the catalog at {catalog.location.shown} belongs to collection {stored_name!r}, "
            f"not {name!r}"
        )
    stored = catalog.get_meta(MetaKey.MODEL)
    if model is not None:
        wanted = parse_model_spec(model).spec
    else:  # an injected encoder names itself; its spec need not be loadable
        wanted = encoder.spec if encoder else parse_model_spec(config.model).spec
    if stored is None and create:
        catalog.set_meta({MetaKey.MODEL: wanted, MetaKey.NAME: name, MetaKey.INDEX_TYPE: EXACT})
    elif model is not None and wanted != stored:
        raise ModelMismatchError(
            f"collection {name!r} was built with {stored}, not {model}; leave out --model "
            f"to use {stored}, or index into a new collection (--collection NEW_NAME)"
        )
    if stored is not None and encoder is not None and encoder.spec != stored:
        raise ModelMismatchError(
            f"collection {name!r} was built with {stored}; the encoder given is "
            f"{encoder.spec}. Pass an encoder of {stored}, or none to load it"
        )


def check_encoder_precision(name: str, stored: str | None, encoder: Encoder | None) -> None:
    """Refuse an encoder given to a collection that runs another image tower than the
    collection's vectors came from."""
    given = getattr(encoder, "precision", FP32)
    if encoder is not None and stored is not None and given != stored:
        raise ModelMismatchError(
            f"collection {name!r} embeds images with its {stored} tower; the encoder given "
            f"runs the {given} one. Pass none to load the collection's own"
        )
