"""The server stays up: ``searchengine serve`` under load, abuse and an unreachable hub.

Everything runs on 127.0.0.1: the real command in a child process, on the toy
collection (shipped ``toy`` model), with the Hugging Face hub pointed at a server that
accepts connections and never answers (``hanginghub.py``) and BLIP not cached. So
every caption request needs a model that cannot come, as on a machine behind a broken
proxy. The bounds asserted are the ones ``docs/web.md`` promises.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fakehub import activate, build_fake_hub
from hanginghub import hanging_hub, unreachable_hub_env
from PIL import Image
from servertools import ToyCollection, build_toy_collection, server_process, toy_model_available

pytestmark = pytest.mark.slow

SEARCHES = 200
CAPTIONS = 20
CONCURRENCY = 20
PAGES = 20  # requests for the page and its script, mixed in
PAGE_FILES = ("/", "/static/app.js")
QUERIES = ["a green circle", "a pink triangle", "a red circle", "a black cross", "a blue star"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ToyCollection, Path]]:
    """The toy collection, indexed with a hub cache that holds nothing but the toy
    model's ONNX export (made by the index run itself); and that cache's folder."""
    if not toy_model_available():
        pytest.skip("the shipped toy model is missing")
    root = tmp_path_factory.mktemp("load")
    hub = build_fake_hub(root / "hf_home", builders=())  # no BLIP
    with pytest.MonkeyPatch.context() as patch:
        activate(patch, hub.hf_home)
        yield build_toy_collection(root), hub.hf_home


@pytest.fixture(scope="module")
def unreachable(toy: tuple[ToyCollection, Path]) -> Iterator[dict[str, str]]:
    _, hf_home = toy
    with hanging_hub() as endpoint:
        yield unreachable_hub_env(os.environ, endpoint, hf_home)


@contextmanager
def client(toy, env: dict[str, str]) -> Iterator[tuple[httpx.Client, subprocess.Popen[bytes]]]:
    """``searchengine serve`` on the toy collection with ``env``; a client and the process."""
    collection, _ = toy
    with (
        server_process(collection, env) as (url, child),
        httpx.Client(base_url=url, timeout=300) as http,
    ):
        yield http, child


# The liveness probe runs in a process of its own: timed in the test's process, it would
# measure how long its thread waits for the interpreter lock among 20 client threads.
PROBE = """
import http.client, json, os, sys, time, urllib.parse
url = urllib.parse.urlsplit(sys.argv[1])
stop, times = sys.argv[2], []
while not os.path.exists(stop):
    started = time.perf_counter()
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    connection.request("GET", "/api/health")
    response = connection.getresponse()
    response.read()
    assert response.status == 200, response.status
    times.append(time.perf_counter() - started)
    connection.close()
    time.sleep(0.02)
print(json.dumps(times))
"""


@contextmanager
def health_probe(url: str) -> Iterator[list[float]]:
    """``/api/health`` asked every 20 ms while the block runs; the seconds each took."""
    times: list[float] = []
    with tempfile.TemporaryDirectory() as folder:
        stop = Path(folder) / "stop"
        probe = subprocess.Popen(
            [sys.executable, "-c", PROBE, url, str(stop)], stdout=subprocess.PIPE, text=True
        )
        try:
            yield times
        finally:
            stop.touch()
            out, _ = probe.communicate(timeout=60)
        assert probe.returncode == 0, out
        times += json.loads(out)


def timed_get(http: httpx.Client, url: str, **params: object) -> tuple[int, float, httpx.Response]:
    started = time.perf_counter()
    response = http.get(url, params=params)
    return response.status_code, time.perf_counter() - started, response


def test_captions_that_cannot_load_never_slow_searches(toy, unreachable) -> None:
    with client(toy, unreachable) as (http, _child):
        found = http.get("/api/search", params={"q": "a circle"}).json()["results"]
        ids = [r["id"] for r in found]

        def one(job: int) -> tuple[str, int, float, httpx.Response]:
            if job >= SEARCHES + CAPTIONS:  # the page itself, amid the load
                status, seconds, response = timed_get(http, PAGE_FILES[job % len(PAGE_FILES)])
                return "page", status, seconds, response
            if job % 11 == 0 and job // 11 < CAPTIONS:
                status, seconds, response = timed_get(
                    http, f"/api/images/{ids[job % len(ids)]}/caption"
                )
                return "caption", status, seconds, response
            status, seconds, response = timed_get(
                http, "/api/search", q=QUERIES[job % len(QUERIES)], k=24
            )
            return "search", status, seconds, response

        with health_probe(str(http.base_url)) as health, ThreadPoolExecutor(CONCURRENCY) as pool:
            jobs = list(range(SEARCHES + CAPTIONS + PAGES))
            random.Random(7).shuffle(jobs)  # page files asked for all through the load
            answers = list(pool.map(one, jobs))
        status = http.get("/api/status").json()

    searches = [a for a in answers if a[0] == "search"]
    captions = [a for a in answers if a[0] == "caption"]
    pages = [a for a in answers if a[0] == "page"]
    assert (len(searches), len(captions), len(pages)) == (SEARCHES, CAPTIONS, PAGES)
    # The page's files wait in the same queue of 20 client threads as the searches (a
    # page file once took 1.1 s at the client while the other test worker ran), so they
    # get the searches' client bound; a blocked server stalls them for seconds to minutes.
    assert all(code == 200 and seconds < 3.0 for _, code, seconds, _ in pages)
    slowest = max(s for _, _, s, _ in searches)
    print(
        f"\nsearches: median {statistics.median(s for _, _, s, _ in searches) * 1000:.0f} ms, "
        f"slowest {slowest * 1000:.0f} ms; health: median "
        f"{statistics.median(health) * 1000:.1f} ms, slowest {max(health) * 1000:.1f} ms "
        f"({len(health)} probes); captions: slowest {max(s for _, _, s, _ in captions):.2f} s; "
        f"server-side search time: slowest "
        f"{max(r.json()['seconds'] for *_, r in searches) * 1000:.0f} ms"
    )
    assert all(code == 200 for _, code, _, _ in searches)
    # What a blocked server looks like: a caption load once held every search ~210 s.
    # The server's own time is the promise (< 1 s); the client's wall time also counts
    # this process's 20 threads waiting for the interpreter lock on a shared machine.
    assert max(r.json()["seconds"] for *_, r in searches) < 1.0
    assert slowest < 3.0
    # A loop blocked by a model load or a hub timeout stalls for seconds; 0.5 s leaves
    # room for this shared 2-core machine's scheduling, not for a blocked loop (the
    # first probe, amid the burst of 20 connections, once took 0.27 s while the other
    # test worker ran; the median stays under 10 ms).
    assert health and max(health) < 0.5
    assert statistics.median(health) < 0.05
    for _, code, seconds, response in captions:  # at once, saying why and when to retry
        assert code == 503, response.text
        assert "caption model" in response.json()["error"]
        assert int(response.headers["retry-after"]) >= 1
        assert seconds < 1.0
    caption_model = next(m for m in status["models"] if m["role"] == "caption")
    assert caption_model["state"] in ("loading", "failed"), caption_model
    if caption_model["state"] == "failed":  # the hub was given 5 s, and said nothing
        assert "within 5 s" in caption_model["error"]
        assert caption_model["retry_in"] > 0


def test_a_failed_model_load_is_remembered_not_retried(toy, unreachable) -> None:
    with client(toy, unreachable) as (http, _child):
        first = http.get("/api/search", params={"q": "a circle", "k": 1}).json()
        image = first["results"][0]["id"]
        assert http.get(f"/api/images/{image}/caption").status_code == 503
        deadline = time.monotonic() + 30
        while (model := caption_state(http))["state"] != "failed":
            assert model["state"] == "loading"
            assert time.monotonic() < deadline, model
            time.sleep(0.2)
        failed_since = model["since"]
        again = http.get(f"/api/images/{image}/caption")
        assert again.status_code == 503
        assert "cannot be loaded" in again.json()["error"]
        assert 30 <= int(again.headers["retry-after"]) <= 60
        assert caption_state(http)["since"] == failed_since  # no new attempt
        # The page's "Caption results": results come back, without captions, saying why.
        page = http.get("/api/search", params={"q": "a circle", "caption": "true"}).json()
        assert page["results"] and all(r["caption"] is None for r in page["results"])
        assert "cannot be loaded" in page["notice"]


def caption_state(http: httpx.Client) -> dict:
    models = http.get("/api/status").json()["models"]
    return next(m for m in models if m["role"] == "caption")


def test_sigterm_stops_the_server_while_a_model_load_hangs(toy, unreachable) -> None:
    with client(toy, unreachable) as (http, child):
        image = http.get("/api/search", params={"q": "a circle"}).json()["results"][0]["id"]
        assert http.get(f"/api/images/{image}/caption").status_code == 503  # load starts
        assert caption_state(http)["state"] == "loading"  # waiting on the silent hub
        started = time.monotonic()
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail("the server ignored SIGTERM for 10 s")
        stopped = time.monotonic() - started
    print(f"\nstopped {stopped:.2f} s after SIGTERM")
    assert stopped < 2.0


def big_png() -> bytes:
    """A 9949 x 9949 RGBA PNG, just under the 100 MP limit: ~400 KB to send, ~400 MB of
    pixels (twice that at the decoder's peak)."""
    image = Image.new("RGBA", (9949, 9949), (40, 120, 200, 255))
    image.paste((250, 60, 60, 255), (2000, 2000, 6000, 6000))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def rss_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for {pid}")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")
def test_concurrent_huge_uploads_stay_within_the_memory_budget(toy, unreachable) -> None:
    data = big_png()
    with client(toy, unreachable) as (http, child):
        before = rss_mb(child.pid, "VmRSS")

        def upload(_: int) -> httpx.Response:
            files = {"file": ("huge.png", data, "image/png")}
            return http.post("/api/similar", files=files, params={"k": 3})

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(upload, range(8)))
        after = rss_mb(child.pid, "VmRSS")
        peak = rss_mb(child.pid, "VmHWM")
    print(
        f"\nserver RSS: {before:.0f} MB before, peak {peak:.0f} MB during 8 concurrent "
        f"{len(data) / 1000:.0f} KB 99 MP PNG uploads, {after:.0f} MB after"
    )
    assert [a.status_code for a in answers] == [200] * 8, [a.text for a in answers]
    assert peak < 1500
