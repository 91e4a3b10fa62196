"""The catalog stays portable: its schema compiles for PostgreSQL as well as SQLite."""

import pytest
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.schema import CreateIndex, CreateTable

from searchengine.catalog import SCHEMA_VERSION, Catalog, metadata
from searchengine.errors import SchemaVersionError


@pytest.mark.parametrize("dialect", [postgresql.dialect(), sqlite.dialect()])
def test_schema_compiles_for_each_dialect(dialect):
    for table in metadata.sorted_tables:
        ddl = str(CreateTable(table).compile(dialect=dialect))
        assert table.name in ddl
        for index in table.indexes:
            str(CreateIndex(index).compile(dialect=dialect))


def test_newer_schema_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.sqlite'}"
    Catalog(url).set_meta({"schema_version": str(SCHEMA_VERSION + 1)})
    with pytest.raises(SchemaVersionError, match="upgrade searchengine"):
        Catalog(url)


def test_schema_1_catalog_is_migrated_in_place(tmp_path):
    """A catalog written by the first release gains the cache tables and keeps its rows."""
    from sqlalchemy import create_engine, inspect, text

    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE meta (key VARCHAR(64) PRIMARY KEY, value TEXT NOT NULL)"))
        conn.execute(text("CREATE TABLE roots (path VARCHAR(4096) PRIMARY KEY)"))
        conn.execute(
            text(
                "CREATE TABLE images (id INTEGER PRIMARY KEY, path VARCHAR(4096) UNIQUE NOT NULL,"
                " size BIGINT NOT NULL, mtime_ns BIGINT NOT NULL, content_hash VARCHAR(64),"
                " width INTEGER, height INTEGER, taken_at FLOAT, status VARCHAR(16) NOT NULL,"
                " error TEXT, indexed_at FLOAT NOT NULL, batch INTEGER NOT NULL)"
            )
        )
        conn.execute(text("INSERT INTO meta VALUES ('schema_version', '1'), ('model', 'toy')"))
        conn.execute(
            text(
                "INSERT INTO images VALUES "
                "(7, '/p/a.jpg', 10, 5, 'h', 4, 3, NULL, 'ok', NULL, 0, 1)"
            )
        )
    engine.dispose()
    catalog = Catalog(url)
    assert catalog.get_meta("schema_version") == str(SCHEMA_VERSION)
    assert {"embeddings", "captions"} <= set(inspect(catalog.engine).get_table_names())
    assert catalog.by_path("/p/a.jpg").id == 7
    assert catalog.get_meta("model") == "toy"
