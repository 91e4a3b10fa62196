"""The catalog on both backends: portable schema, version checks, stepwise upgrades."""

import numpy as np
import pytest
from sqlalchemy import text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.schema import CreateIndex, CreateTable

from searchengine.backends import create_catalog_engine, server_location, sqlite_location
from searchengine.catalog import Catalog, insert_image
from searchengine.errors import SchemaVersionError
from searchengine.schema import SCHEMA_VERSION, metadata


def location(tmp_path, database_url, name="c"):
    if database_url is None:
        return sqlite_location(tmp_path)
    return server_location(database_url, name)


def open_catalog(where, **kwargs) -> Catalog:
    return Catalog(where.url, schema=where.schema, **kwargs)


def raw_sql(where, *statements):
    """Run DDL/DML as an older release would have, in the collection's schema."""
    engine = create_catalog_engine(where)
    with engine.begin() as conn:
        if where.schema:
            conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {where.schema}"))
        for sql in statements:
            conn.execute(text(sql))
    engine.dispose()


@pytest.mark.parametrize("dialect", [postgresql.dialect(), sqlite.dialect()])
def test_schema_compiles_for_each_dialect(dialect):
    for table in metadata.sorted_tables:
        ddl = str(CreateTable(table).compile(dialect=dialect))
        assert table.name in ddl
        for index in table.indexes:
            str(CreateIndex(index).compile(dialect=dialect))


def test_newer_schema_is_refused(tmp_path, database_url):
    where = location(tmp_path, database_url)
    catalog = open_catalog(where)
    catalog.set_meta({"schema_version": str(SCHEMA_VERSION + 1)})
    catalog.close()
    with pytest.raises(SchemaVersionError, match="upgrade searchengine"):
        open_catalog(where)
    with pytest.raises(SchemaVersionError, match="upgrade searchengine"):
        open_catalog(where, writable=False)


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


V2_IMAGES = (
    "CREATE TABLE images ({id}, path VARCHAR(4096) UNIQUE NOT NULL,"
    " size BIGINT NOT NULL, mtime_ns BIGINT NOT NULL, content_hash VARCHAR(64),"
    " width INTEGER, height INTEGER, taken_at FLOAT, status VARCHAR(16) NOT NULL,"
    " error TEXT, indexed_at FLOAT NOT NULL, batch INTEGER NOT NULL)"
)


def make_schema_2(where) -> None:
    """A catalog as release 0.1 (schema 2) wrote it, with two images and a caption."""
    serial = "id SERIAL PRIMARY KEY" if where.schema else "id INTEGER PRIMARY KEY"
    raw_sql(
        where,
        "CREATE TABLE meta (key VARCHAR(64) PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE roots (path VARCHAR(4096) PRIMARY KEY)",
        V2_IMAGES.format(id=serial),
        "CREATE INDEX ix_images_status ON images (status)",
        "CREATE INDEX ix_images_content_hash ON images (content_hash)",
        "CREATE TABLE embeddings (image_id INTEGER, model VARCHAR(512), content_hash"
        " VARCHAR(64) NOT NULL, vector BYTEA NOT NULL, PRIMARY KEY (image_id, model))"
        if where.schema
        else "CREATE TABLE embeddings (image_id INTEGER, model VARCHAR(512), content_hash"
        " VARCHAR(64) NOT NULL, vector BLOB NOT NULL, PRIMARY KEY (image_id, model))",
        "CREATE TABLE captions (image_id INTEGER, model VARCHAR(512), content_hash"
        " VARCHAR(64) NOT NULL, text TEXT NOT NULL, created_at FLOAT NOT NULL,"
        " PRIMARY KEY (image_id, model))",
        "CREATE TABLE pending_vectors (image_id INTEGER PRIMARY KEY, batch INTEGER NOT NULL,"
        + (" vector BYTEA NOT NULL)" if where.schema else " vector BLOB NOT NULL)"),
        "INSERT INTO meta VALUES ('schema_version', '2'), ('model', 'toy'), ('name', 'c')",
        "INSERT INTO images (id, path, size, mtime_ns, content_hash, width, height, taken_at,"
        " status, error, indexed_at, batch) VALUES"
        " (7, '/p/a.jpg', 10, 5, 'h', 4, 3, NULL, 'ok', NULL, 0, 1),"
        " (9, 'bytes:/p/caf%E9.jpg', 11, 6, 'g', 4, 3, NULL, 'ok', NULL, 0, 1)",
        "INSERT INTO captions VALUES (7, 'blip', 'h', 'a dog', 0)",
    )


def test_schema_2_catalog_is_upgraded_by_a_writer_only(tmp_path, database_url):
    """A reader refuses an old catalog (and changes nothing); a writer upgrades it in
    place: same ids and rows, any path unique by its hash, new ids after the old."""
    where = location(tmp_path, database_url)
    make_schema_2(where)
    with pytest.raises(SchemaVersionError, match="searchengine index --collection c"):
        open_catalog(where, writable=False)
    catalog = open_catalog(where)
    assert catalog.get_meta("schema_version") == str(SCHEMA_VERSION)
    assert catalog.by_path("/p/a.jpg").id == 7
    assert catalog.by_path("/p/caf\udce9.jpg").id == 9  # a non-UTF-8 name survives
    with catalog.engine.connect() as conn:
        assert conn.scalar(text("SELECT text FROM captions WHERE image_id = 7")) == "a dog"
    long_path = "/p/" + "/".join(["d" * 250] * 12) + "/x.jpg"  # 3,000+ bytes
    with catalog.transaction() as conn:
        new = insert_image(conn, {"path": long_path, "size": 1, "mtime_ns": 1, "status": "ok"})
    assert new > 9 and catalog.by_path(long_path).id == new
    catalog.close()
    reader = open_catalog(where, writable=False)  # now current: a reader opens it
    assert reader.found and reader.by_path(long_path).id == new
    reader.close()


def test_logged_vectors_come_back_in_chunks_on_each_backend(tmp_path, database_url):
    """A host building its index from a shared catalog holds a chunk of vectors at a
    time beside the index, not every vector the catalog keeps."""
    import numpy as np

    from searchengine.catalog import log_vectors, pending_vectors

    catalog = open_catalog(location(tmp_path, database_url))
    vectors = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    with catalog.transaction() as conn:
        ids = [
            insert_image(conn, {"path": f"/p/{i}.jpg", "size": 1, "mtime_ns": 1, "status": "ok"})
            for i in range(5)
        ]
        log_vectors(conn, 1, ids[:2], vectors[:2])
        log_vectors(conn, 2, ids[2:], vectors[2:])
    with catalog.transaction() as conn:
        chunks = list(pending_vectors(conn, 0, chunk=2))
        newer = list(pending_vectors(conn, 1, chunk=2))
    catalog.close()
    assert [len(part) for part, _ in chunks] == [2, 2, 1]
    got = dict(
        zip(
            np.concatenate([p for p, _ in chunks]).tolist(),
            np.concatenate([v for _, v in chunks]),
            strict=True,
        )
    )
    assert all(np.array_equal(got[i], v) for i, v in zip(ids, vectors, strict=True))
    assert sorted(np.concatenate([p for p, _ in newer]).tolist()) == sorted(ids[2:])


def test_status_counts_files_indexed_with_a_warning_in_one_pass(tmp_path, database_url):
    """Failed rows keep their reason in ``error`` as well: only the indexed rows that
    carry what their decoder said count as warned, on each backend."""
    catalog = open_catalog(location(tmp_path, database_url))
    rows = [
        ("ok", None), ("ok", None), ("ok", "decoded with warnings: Truncated File Read"),
        ("failed", "truncated JPEG file: …"), ("failed", "not an image: it is text"),
    ]  # fmt: skip
    with catalog.transaction() as conn:
        for i, (status, error) in enumerate(rows):
            values = {"path": f"/p/{i}.jpg", "size": 1, "mtime_ns": 1, "status": status}
            insert_image(conn, {**values, "error": error})
    assert catalog.counts_and_warned() == ({"ok": 3, "failed": 2}, 1)
    assert catalog.counts() == {"ok": 3, "failed": 2}
    catalog.close()


def test_members_marks_the_ids_a_sorted_array_holds():
    from searchengine.catalog import members

    wanted = np.array([2, 5, 9], dtype=np.int64)
    ids = np.array([9, 1, 5, 10, 2, 2, 0, 7], dtype=np.int64)
    assert members(ids, wanted).tolist() == [True, False, True, False, True, True, False, False]
    assert members(ids, np.zeros(0, dtype=np.int64)).tolist() == [False] * 8
    assert members(np.zeros(0, dtype=np.int64), wanted).tolist() == []
