"""The web page behind a real reverse proxy: Debian's nginx (``tests/nginx.py``) in front
of ``searchengine serve``, configured with the lines ``docs/web.md`` gives users, and
with nginx's own defaults where a user leaves them; Debian's Chromium drives the page.

What a proxy changes for the page: the path it lives under (``/photos/``), the ``Host``
the server is asked for (the upstream's address by default, a name without the port
with ``proxy_set_header Host $host``), a limit on uploads (1 MB by default), and who
answers when ``serve`` does not (nginx's 502).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from nginx import Proxy, ProxyUnavailable, start_proxy
from PIL import Image
from servertools import ToyCollection, live_server, server_process
from test_browser import ALL_LOADED, VIEWER_LOADED, card_names, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DOCS = Path(__file__).parents[2] / "docs" / "web.md"
QUERY = "a green circle"
TOKEN = "proxy-test-token-0123456789"


def documented_site(upstream: str) -> str:
    """The nginx lines of docs/web.md, pointed at ``upstream`` (``http://127.0.0.1:PORT``)."""
    text = DOCS.read_text()
    block = text.split("<!-- nginx-site:", 1)[1].split("```nginx\n", 1)[1].split("```", 1)[0]
    assert "http://127.0.0.1:8765/" in block
    return block.replace("http://127.0.0.1:8765", upstream)


@pytest.fixture(scope="module")
def env(fake_hub) -> dict[str, str]:
    return {**os.environ, **fake_hub.env(), "SEARCHENGINE_TOKEN": TOKEN}


@pytest.fixture(scope="module")
def server(toy: ToyCollection, env: dict[str, str]) -> Iterator[str]:
    with live_server(toy, env) as url:
        yield url


@pytest.fixture
def proxy() -> Iterator[Callable[[str], Proxy]]:
    """Starts nginx serving the given site lines; each is stopped at the end."""
    started: list[Proxy] = []

    def start(site: str) -> Proxy:
        try:
            started.append(start_proxy(site))
        except ProxyUnavailable as exc:
            if os.environ.get("CI"):
                pytest.fail(f"CI runs the proxy tests, but nginx did not start: {exc}")
            pytest.skip(f"nginx is not available here: {exc}")
        return started[-1]

    yield start
    for running in started:
        running.stop()


@pytest.fixture
def big_photo(tmp_path: Path) -> str:
    """A 6 MP JPEG of noise: ~5 MB, over nginx's default upload limit of 1 MB."""
    pixels = np.random.default_rng(3).integers(0, 256, (2000, 3000, 3), dtype=np.uint8)
    path = tmp_path / "holiday.jpg"
    Image.fromarray(pixels).save(path, quality=95)
    assert path.stat().st_size > 2_000_000
    return str(path)


def search(page, query: str) -> None:
    page.fill("#q", query)
    page.keyboard.press("Enter")


def test_the_documented_lines_serve_the_page_under_a_path(
    page, server, toy, proxy, big_photo
) -> None:
    from playwright.sync_api import expect

    front = proxy(documented_site(server))
    found = toy.cli_json("search", QUERY, "-k", "24")
    names = [os.path.basename(r["path"]) for r in found]
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url))

    page.goto(f"{front.url}/photos#token={TOKEN}")  # nginx adds the slash
    expect(page.locator("#collection")).to_contain_text("60 photos")
    assert page.url == f"{front.url}/photos/"  # the token is out of the address
    search(page, QUERY)
    expect(page.locator("#message")).to_contain_text(f"24 photos for “{QUERY}”")
    assert card_names(page) == names
    wait_until(page, ALL_LOADED)
    assert page.url.startswith(f"{front.url}/photos/?q=")  # a link to the search works

    page.locator("#results .card").first.click()
    wait_until(page, VIEWER_LOADED)
    original = page.locator("#original").evaluate("a => a.href")
    got = page.request.get(original)
    assert got.status == 200 and got.headers["content-type"].startswith("image/")
    page.locator("#similar-btn").click()
    expect(page.locator("#message")).to_contain_text(f"24 photos for photos like {names[0]}")
    similar = toy.cli_json("similar", found[0]["path"], "-k", "24")
    assert card_names(page) == [os.path.basename(r["path"]) for r in similar]

    page.locator("#options summary").click()
    page.set_input_files("#upload", big_photo)
    expect(page.locator("#message")).to_contain_text("24 photos for photos like holiday.jpg")
    wait_until(page, ALL_LOADED)
    # After the address typed, everything the page asked for was under the proxy's path.
    assert asked[0] == f"{front.url}/photos"
    elsewhere = [u for u in asked[1:] if not u.startswith(f"{front.url}/photos/")]
    assert len(asked) > 24 and not elsewhere  # thumbnails, API calls, the upload


@pytest.mark.parametrize(
    "host", ["", "proxy_set_header Host $host;"], ids=["nginx-default-host", "host-without-port"]
)
def test_logging_in_and_uploading_work_whatever_host_the_proxy_passes(
    browser, server, proxy, big_photo, host
) -> None:
    from playwright.sync_api import expect

    site = f"location / {{\n proxy_pass {server};\n client_max_body_size 20m;\n {host}\n}}"
    front = proxy(site)
    context = browser.new_context()
    page = context.new_page()
    page.goto(front.url)
    expect(page.locator("#token-dialog")).to_be_visible()
    page.keyboard.type(TOKEN)
    page.keyboard.press("Enter")
    expect(page.locator("#collection")).to_contain_text("60 photos")
    page.locator("#options summary").click()
    page.set_input_files("#upload", big_photo)
    expect(page.locator("#message")).to_contain_text("24 photos for photos like holiday.jpg")
    context.close()


def test_two_servers_under_one_host_keep_their_own_tokens(browser, toy, env, proxy) -> None:
    from playwright.sync_api import expect

    other = "proxy-test-other-token-98765"
    with (
        live_server(toy, {**env, "SEARCHENGINE_TOKEN": other}) as second,
        live_server(toy, env) as first,
    ):
        site = "\n".join(
            f"location /{name}/ {{ proxy_pass {url}/; }}"
            for name, url in (("family", first), ("work", second))
        )
        front = proxy(site)
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{front.url}/family/#token={TOKEN}")
        expect(page.locator("#collection")).to_contain_text("60 photos")
        page.goto(f"{front.url}/work/#token={other}")
        expect(page.locator("#collection")).to_contain_text("60 photos")
        page.goto(f"{front.url}/family/")  # its cookie was not replaced by the other's
        expect(page.locator("#collection")).to_contain_text("60 photos")
        search(page, QUERY)
        expect(page.locator("#message")).to_contain_text("24 photos")
        wait_until(page, ALL_LOADED)
        context.close()


def test_what_the_proxy_answers_for_the_server_is_said_plainly(
    browser, toy, env, proxy, big_photo
) -> None:
    from playwright.sync_api import expect

    page = browser.new_context().new_page()  # the 413 and the 502 are logged as errors
    with server_process(toy, env) as (upstream, child):
        # nginx's defaults: 1 MB uploads, the upstream's address as Host.
        front = proxy(f"location /photos/ {{ proxy_pass {upstream}/; }}")
        page.goto(f"{front.url}/photos/#token={TOKEN}")
        expect(page.locator("#collection")).to_contain_text("60 photos")
        page.locator("#options summary").click()
        page.set_input_files("#upload", big_photo)
        expect(page.locator("#error")).to_contain_text(
            "larger than the proxy in front of the server accepts"
        )
        child.terminate()
        child.wait(timeout=20)
        search(page, QUERY)
        expect(page.locator("#error")).to_contain_text(
            "the proxy in front of it answered 502: is `searchengine serve` still running?"
        )
    assert re.search(r"connect\(\) failed .*Connection refused", front.log())


def test_a_server_without_a_token_refuses_what_a_proxy_forwards(toy, env, proxy) -> None:
    """Without a token the server answers loopback names only, and the proxy's
    requests carry one: nginx's default Host is the upstream's ``127.0.0.1:PORT``.
    The headers a proxy set up as guides say (``X-Forwarded-For``, ``X-Real-IP``)
    give it away: refused, saying to use a token. With nginx's bare defaults nothing
    does, which docs/web.md says."""
    import httpx

    tokenless = {k: v for k, v in env.items() if k != "SEARCHENGINE_TOKEN"}
    with live_server(toy, tokenless) as upstream:
        guides = (
            "proxy_set_header X-Real-IP $remote_addr;\n"
            "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;"
        )
        front = proxy(f"location / {{ proxy_pass {upstream}; {guides} }}")
        for url in ("/", "/api/search?q=a+circle"):
            refused = httpx.get(f"{front.url}{url}", timeout=30)
            assert refused.status_code == 403
            assert "start it with a token" in refused.json()["error"]
        assert httpx.get(f"{upstream}/api/health", timeout=30).status_code == 200
        bare = proxy(f"location / {{ proxy_pass {upstream}; }}")
        assert httpx.get(f"{bare.url}/api/health", timeout=30).status_code == 200
