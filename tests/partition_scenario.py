"""Run by ``tests/unit/test_catalog_network.py`` in a network namespace of its own
(``blackhole.run_isolated``): a live PostgreSQL server, a collection on it, a real
``searchengine serve`` that has answered a search (its pool holds the connection),
then the network between them silently gone (``blackhole.swallow``), then back.

- ``idle``: the network goes while the server's connection sits in its pool; then a
  search, and another;
- ``mid-query``: it goes while a search waits on the server for a table an
  administrator's ``ALTER TABLE`` holds (its answer, the lock time-out, never comes).

Prints what each request got, and when, as JSON on its last line.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
from blackhole import restore, swallow
from clirunner import on_server
from imagegen import solid
from pgcluster import start_cluster
from servertools import serve_command

WAIT_S = 150  # the client's own limit: far past what the product should take


def ask(base: str, route: str, **params: str) -> dict[str, object]:
    started = time.monotonic()
    try:
        answer = httpx.get(f"{base}{route}", params=params, timeout=WAIT_S)
    except httpx.TimeoutException:
        return {"status": None, "seconds": time.monotonic() - started, "error": "no answer"}
    body = answer.json()
    return {
        "status": answer.status_code,
        "seconds": time.monotonic() - started,
        "error": body.get("error") if isinstance(body, dict) else None,
        "results": len(body.get("results", [])) if isinstance(body, dict) else 0,
    }


def main(scenario: str) -> None:
    root = Path(tempfile.mkdtemp(prefix="searchengine-partition-"))
    photos = root / "photos"
    solid(photos / "red.jpg", (250, 0, 0))
    solid(photos / "blue.png", (0, 0, 250), fmt="PNG")
    cluster = start_cluster()
    out: dict[str, object] = {}
    try:
        url = cluster.new_database()
        home = root / "idx"
        indexed = on_server(home, url, "index", str(photos), "-m", "toy", "-c", "team")
        assert indexed.returncode == 0, indexed.stderr
        where = ["-c", "team", "--index-dir", str(home), "--database-url", url]
        with serve_command(root, os.environ, *where) as (base, _child):
            out["before"] = ask(base, "/api/search", q="red")
            if scenario == "idle":
                swallow(cluster.port)
                try:
                    out["search"] = ask(base, "/api/search", q="blue")
                    out["again"] = ask(base, "/api/search", q="red")
                finally:
                    restore()
            else:
                with psycopg.connect(url) as admin, ThreadPoolExecutor(1) as pool:
                    admin.execute("ALTER TABLE se_team.images ADD COLUMN note text")
                    waiting = pool.submit(ask, base, "/api/search", q="blue")
                    time.sleep(1)  # the search is on the server, waiting for the lock
                    swallow(cluster.port)
                    try:
                        out["search"] = waiting.result()
                    finally:
                        restore()
                    admin.rollback()
            deadline = time.monotonic() + 60
            while True:  # the server's next connection, now that packets flow again
                out["after"] = ask(base, "/api/search", q="red")
                if out["after"]["status"] == 200 or time.monotonic() > deadline:
                    break
                time.sleep(1)
        log = next(root.glob("serve-*.log")).read_text(errors="replace")
        out["log"] = [line for line in log.splitlines() if "catalog" in line][-3:]
    finally:
        cluster.stop()
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
