"""What a server catalog's connection safeguards cost, measured side by side in one run.

Each connection a collection opens on PostgreSQL checks that its session is in the
collection's schema alone (``backends._check_schema``: a pooler may have dropped the
``search_path``), each pooled connection is pinged when it is taken
(``pool_pre_ping``: one the server ended while idle is replaced, not failed on), and a
writer asks its lock's session one round trip before each batch commits
(``DatabaseLock.check``). Printed, each against what it sits beside:

- the schema check against opening the connection it runs on;
- a pooled read of the catalog's version (what a web server does before each query)
  with and without the ping;
- the lock's round trip.

Medians of ``--rounds`` alternating rounds, each the best of 5 runs of ``--repeat``. Without
``--database-url`` a throwaway PostgreSQL cluster is started (``tests/pgcluster.py``)
and removed after.

Usage:
    python scripts/bench_connection.py
    python scripts/bench_connection.py --rounds 9 --repeat 2000 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def best_ms(step: Callable[[], Any], repeat: int) -> float:
    """The fastest of 5 runs of ``repeat`` steps, in ms a step."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(repeat):
            step()
        best = min(best, time.perf_counter() - started)
    return best / repeat * 1000


def measure(url: str, rounds: int, repeat: int) -> dict[str, float]:
    import psycopg
    from sqlalchemy import text

    from searchengine.backends import (
        _check_schema,
        _options,
        create_catalog_engine,
        server_location,
    )

    location = server_location(url, "bench")
    plain = location.url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS se_bench")
        conn.execute("CREATE TABLE IF NOT EXISTS se_bench.meta (key text PRIMARY KEY, value text)")
        conn.execute(
            "INSERT INTO se_bench.meta VALUES ('catalog_id', 'x'), ('last_batch', '5') "
            "ON CONFLICT DO NOTHING"
        )
    pinged = create_catalog_engine(location)
    unpinged = create_catalog_engine(location)
    unpinged.pool._pre_ping = False  # the same engine as before the ping
    version = text(
        "SELECT (SELECT value FROM meta WHERE key = 'catalog_id'), "
        "(SELECT value FROM meta WHERE key = 'last_batch')"
    )

    def read(engine: Any) -> Callable[[], Any]:
        def step() -> None:
            with engine.connect() as conn:
                conn.execute(version).one()

        return step

    def connect() -> None:
        psycopg.connect(plain, options=_options(location)).close()

    session = psycopg.connect(plain, options=_options(location))
    lock = psycopg.connect(plain, options=_options(location), autocommit=True)
    cases: dict[str, tuple[Callable[[], Any], int]] = {
        "connect_ms": (connect, max(1, repeat // 50)),
        "schema_check_ms": (lambda: _check_schema(session, location), repeat),
        "read_with_ping_ms": (read(pinged), repeat),
        "read_without_ping_ms": (read(unpinged), repeat),
        "lock_round_trip_ms": (lambda: lock.execute("SELECT 1"), repeat),
    }
    seen: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, (step, times) in cases.items():
            seen[name].append(best_ms(step, times))
    session.close()
    lock.close()
    pinged.dispose()
    unpinged.dispose()
    out = {name: statistics.median(values) for name, values in seen.items()}
    out["schema_check_over_connect"] = out["schema_check_ms"] / out["connect_ms"]
    out["read_ping_over_without"] = out["read_with_ping_ms"] / out["read_without_ping_ms"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url", help="an empty PostgreSQL database (else a throwaway cluster)"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=1000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    from pgcluster import database

    with database(args.database_url) as url:
        out = measure(url, args.rounds, args.repeat)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"open a connection          {out['connect_ms']:.2f} ms")
    print(
        f"its schema check           {out['schema_check_ms']:.3f} ms "
        f"({out['schema_check_over_connect']:.2f} of the connection)"
    )
    print(
        f"pooled version read        {out['read_with_ping_ms']:.3f} ms with the ping, "
        f"{out['read_without_ping_ms']:.3f} ms without (x{out['read_ping_over_without']:.2f})"
    )
    print(f"the lock's round trip      {out['lock_round_trip_ms']:.3f} ms a batch")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
