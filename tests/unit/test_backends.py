"""Where a catalog lives, without a server: URLs, schemas per collection, refusals."""

from __future__ import annotations

import json

import pytest

from searchengine.backends import (
    locate,
    redact,
    same_database,
    schema_name,
    server_location,
    write_location,
)
from searchengine.errors import CollectionError, ConfigError

URL = "postgresql://me:s3cret@db.example:5432/photos"


def test_a_server_url_means_psycopg_3_and_a_schema_per_collection():
    location = server_location(URL, "family")
    assert location.url.startswith("postgresql+psycopg://me:s3cret@db.example:5432/")
    assert location.schema == "se_family" and location.shared
    assert location.shown == "postgresql+psycopg://me:***@db.example:5432/photos"
    assert "s3cret" not in json.dumps(location.record())


def test_collection_names_never_share_a_schema():
    names = ["trip", "Trip", "t.rip", "t-rip", "t_rip", "x" * 64, "x" * 63 + "y"]
    schemas = [schema_name(n) for n in names]
    assert len(set(schemas)) == len(names)
    for schema in schemas:  # plain identifiers PostgreSQL accepts unquoted
        assert len(schema) <= 63 and schema.replace("_", "").isalnum() and schema.islower()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "not a database URL"),
        ("mysql://me@db/photos", "unsupported catalog database 'mysql'"),
    ],
)
def test_unusable_urls_are_refused_without_echoing_secrets(url, message):
    with pytest.raises(ConfigError, match=message):
        server_location(url, "c")
    assert redact("not a url") == "…"


def test_same_database_ignores_driver_and_password():
    assert same_database(URL, "postgresql+psycopg://me@db.example:5432/photos")
    assert not same_database(URL, "postgresql://me@db.example:5432/other")
    assert not same_database(URL, "postgresql://you@db.example:5432/photos")


def test_a_folder_keeps_to_the_catalog_it_was_made_with(tmp_path):
    folder = tmp_path / "family"
    assert locate("family", folder, None).backend == "sqlite"
    folder.mkdir()
    write_location(folder, server_location(URL, "family"))
    assert locate("family", folder, None).url == "postgresql+psycopg://me@db.example:5432/photos"
    assert locate("family", folder, URL).schema == "se_family"
    with pytest.raises(CollectionError, match="keeps its catalog in postgresql"):
        locate("family", folder, "postgresql://me@db.example:5432/elsewhere")
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "catalog.sqlite").write_bytes(b"")
    with pytest.raises(CollectionError, match="leave out --database-url"):
        locate("local", tmp_path / "local", URL)
    with pytest.raises(ConfigError, match="SQLite catalog lives in its collection's folder"):
        locate("family", folder, f"sqlite:///{tmp_path / 'x.db'}")
