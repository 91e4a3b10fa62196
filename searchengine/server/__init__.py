"""The local web page and HTTP API (``searchengine serve``); needs the ``server`` extra.

``create_app(collection, token=...)`` builds the FastAPI app for an open collection.
See ``docs/web.md`` for the routes and the security policy.
"""

from __future__ import annotations

from searchengine.server.app import create_app
from searchengine.server.security import check_binding

__all__ = ["check_binding", "create_app"]
