"""A web server whose network to its catalog's server goes silent: a partition, a dead
host, a firewall or NAT that forgot the connection. For real: a live PostgreSQL server
and the real ``searchengine serve``, in a network namespace of their own whose kernel
drops what the database server sends (``tests/blackhole.py``); the scenarios are
``tests/partition_scenario.py``.

Before, the server's next search waited for the kernel to give up on the connection
(no answer in 150 s, the test's limit, in both scenarios; ~15 min of retransmission,
or 2 h before the first keepalive probe), and every search queued behind it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from blackhole import run_isolated, unavailable

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SCRIPT = str(Path(__file__).parents[1] / "partition_scenario.py")
UNREACHABLE = "the collection's catalog database cannot be reached now; try again shortly"


def scenario(name: str) -> dict:
    if (why := unavailable()) is not None:
        pytest.skip(why)
    done = run_isolated(SCRIPT, name, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"\n{name}: "
        + ", ".join(
            f"{k} {v['status']} in {v['seconds']:.1f} s" for k, v in out.items() if k != "log"
        )
    )
    return out


def test_a_search_after_the_network_went_silent_is_a_503_in_seconds_then_it_recovers():
    """The network goes while the server's connection sits in its pool. The next
    search's check of that connection gives up when its data is not acknowledged for
    10 s (``tcp_user_timeout``), a new connection when it is not answered in 10 s
    (``connect_timeout``): 503 "cannot be reached", then each search 10 s, not
    hanging; once packets flow again, results as before."""
    out = scenario("idle")
    assert out["before"]["status"] == 200
    for asked in (out["search"], out["again"]):
        assert asked["status"] == 503 and asked["error"] == UNREACHABLE, asked
    assert out["search"]["seconds"] < 45 and out["again"]["seconds"] < 30
    assert "the server did not answer" in out["log"][-1]  # the log says why, in one line
    assert out["after"]["status"] == 200 and out["after"]["results"] == 2


def test_a_search_in_flight_when_the_network_goes_is_a_503_in_seconds():
    """The network goes while a search waits on the database server (for a table a
    migration holds): its answer never comes. After 5 s the server is checked with a
    new connection, which gets no answer in 5 s (``catalog_watch``), and the waiting
    connection is cut (before that, three keepalive probes 5 s apart after 10 s of
    silence ended it, in 15 s): 503 "cannot be reached"; then results again."""
    out = scenario("mid-query")
    assert out["search"]["status"] == 503 and out["search"]["error"] == UNREACHABLE
    assert out["search"]["seconds"] < 45
    assert "the server stopped answering" in out["log"][-1]
    assert "the network to it is down" in out["log"][-1]
    assert out["after"]["status"] == 200 and out["after"]["results"] == 2
