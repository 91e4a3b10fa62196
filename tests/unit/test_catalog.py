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
