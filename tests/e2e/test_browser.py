"""The web page in real headless Chromium, driven by Playwright, against `searchengine serve`.

Chromium is Debian's (``/usr/bin/chromium``; ``scripts/install_browser.sh`` installs it,
``scripts/test.sh`` runs that first); Playwright only drives it, it downloads nothing.
The server is the real command in a child process, on the toy collection.

Set ``SEARCHENGINE_SCREENSHOT=1`` to rewrite ``docs/screenshot.png`` (it is written
anyway when missing); every run also leaves one in the test's temporary folder.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from servertools import ToyCollection, live_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SCREENSHOT = Path(__file__).parents[2] / "docs" / "screenshot.png"
QUERY = "a green circle"  # 5 of the 60 toy photos show one; the toy model ranks one first
TOKEN = "browser-test-token-0123456789"
ALL_LOADED = (
    "Array.from(document.querySelectorAll('#results img'))"
    ".every(i => i.complete && i.naturalWidth > 0)"
)
VIEWER_LOADED = "document.getElementById('viewer-img').naturalWidth > 0"


@pytest.fixture(scope="module")
def env(fake_hub) -> dict[str, str]:
    return {**os.environ, **fake_hub.env()}


@pytest.fixture(scope="module")
def server(toy: ToyCollection, env: dict[str, str]) -> str:
    with live_server(toy, env) as url:
        yield url


def wait_until(page, condition: str, timeout: float = 15.0) -> None:
    """Poll a JavaScript condition (``wait_for_function`` needs eval, which the CSP forbids)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(condition):
        assert time.monotonic() < deadline, f"timed out waiting for {condition}"
        time.sleep(0.05)


def focused(page) -> str | None:
    """The grid index of the focused card, or the id of whatever else has focus."""
    return page.evaluate("document.activeElement.dataset.index ?? document.activeElement.id")


def card_names(page) -> list[str]:
    return page.locator("#results .card .name").all_inner_texts()


def test_search_open_and_more_like_this_with_the_keyboard(page, server, toy, tmp_path):
    from playwright.sync_api import expect

    expected = toy.cli_json("search", QUERY, "-k", "24")
    page.goto(server)
    expect(page.locator("#collection")).to_contain_text("60 photos")
    assert focused(page) == "q"  # the search box has focus on load
    page.keyboard.type(QUERY)
    page.keyboard.press("Enter")
    expect(page.locator("#message")).to_contain_text(f"24 photos for “{QUERY}”")
    names = card_names(page)
    assert names == [os.path.basename(r["path"]) for r in expected]
    if toy.semantic:  # the trained toy model: a green circle comes first
        assert "green circle" in toy.shows[expected[0]["path"]]
    scores = page.locator("#results .card .score").all_inner_texts()
    assert scores[0] == f"{expected[0]['score']:.3f}"
    wait_until(page, ALL_LOADED)
    save_screenshot(page, tmp_path)

    page.keyboard.press("ArrowDown")  # from the search box into the grid
    assert focused(page) == "0"
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    assert focused(page) == "2"
    page.keyboard.press("ArrowDown")  # one row down: as many cards as fit in a row
    row = page.evaluate("document.activeElement.dataset.index")
    assert int(row) > 2
    page.keyboard.press("Home")
    assert focused(page) == "0"

    page.keyboard.press("Enter")
    viewer = page.locator("#viewer")
    expect(viewer).to_be_visible()
    expect(page.locator("#viewer-title")).to_have_text(names[0])
    expect(page.locator("#viewer-path")).to_have_text(expected[0]["path"])
    wait_until(page, VIEWER_LOADED)
    page.screenshot(path=str(tmp_path / "viewer.png"))
    page.keyboard.press("Escape")
    expect(viewer).to_be_hidden()
    assert focused(page) == "0"  # back where the keyboard was

    page.keyboard.press("Enter")
    expect(viewer).to_be_visible()
    assert focused(page) == "similar-btn"
    page.keyboard.press("Enter")  # more like this
    # The busy message ("Searching for photos like …") names the image too: wait for
    # the one that counts the results, or the grid read below is the old one.
    expect(page.locator("#message")).to_contain_text(f"24 photos for photos like {names[0]}")
    similar = toy.cli_json("similar", expected[0]["path"], "-k", "24")
    assert card_names(page) == [os.path.basename(r["path"]) for r in similar]
    shown = page.locator("#results .card .score").all_inner_texts()
    assert shown == [f"{r['score']:.3f}" for r in similar]
    assert names[0] not in card_names(page)
    assert focused(page) == "0"
    page.keyboard.press("/")  # back to the search box
    assert focused(page) == "q"


def test_more_results_load_on_request(page, server):
    from playwright.sync_api import expect

    page.goto(f"{server}/?q=a+black+cross")  # a search can be linked to
    expect(page.locator("#message")).to_contain_text("24 photos for “a black cross”")
    page.locator("#more").click()
    expect(page.locator("#message")).to_contain_text("48 photos")
    page.locator("#more").click()
    expect(page.locator("#message")).to_contain_text("60 photos (all)")
    expect(page.locator("#more")).to_be_hidden()
    assert len(set(card_names(page))) == 60


def test_nothing_found_and_server_errors_are_said_plainly(page, server):
    from playwright.sync_api import expect

    # The server's failure is simulated by answering its search route. With the route
    # added between the two searches, the page now and then went on saying "Nothing
    # matches" after the second one; it is set up before the page loads and switched
    # on later.
    down = {"now": False}

    def search_route(route) -> None:
        if not down["now"]:
            route.continue_()
            return
        body = '{"error": "the model cannot be loaded"}'
        route.fulfill(status=503, content_type="application/json", body=body)

    page.route("**/api/search?*", search_route)
    page.goto(server)
    page.locator("#options summary").click()
    page.fill("#after", "2001-01-01")
    page.fill("#before", "2001-01-02")
    page.fill("#q", "a green star")
    page.keyboard.press("Enter")
    expect(page.locator("#message")).to_contain_text("Nothing matches “a green star”")
    expect(page.locator("#results .card")).to_have_count(0)

    down["now"] = True
    page.keyboard.press("Enter")
    expect(page.locator("#error")).to_have_text("Search failed: the model cannot be loaded")
    expect(page.locator("#message")).to_have_text("")


RECORD_STATES = """() => {
  window.states = [];
  const record = () => window.states.push({
    message: document.getElementById("message").textContent,
    progress: !document.getElementById("progress").hidden,
    busy: document.getElementById("results").getAttribute("aria-busy"),
  });
  new MutationObserver(record).observe(document.body, {
    subtree: true, childList: true, characterData: true, attributes: true,
  });
}"""


def test_a_slow_search_shows_progress(page, server):
    from playwright.sync_api import expect

    def slowly(route) -> None:
        time.sleep(1.0)  # the page's own timers run on meanwhile
        route.continue_()

    page.goto(server)
    page.route("**/api/search?*", slowly)
    page.evaluate(RECORD_STATES)
    page.fill("#q", "a yellow cross")
    page.keyboard.press("Enter")
    expect(page.locator("#message")).to_contain_text("photos for “a yellow cross”")
    expect(page.locator("#progress")).to_be_hidden()
    states = page.evaluate("window.states")
    waiting = [s for s in states if s["message"] == "Searching for “a yellow cross”…"]
    assert waiting and any(s["progress"] and s["busy"] == "true" for s in waiting)
    assert states[-1]["busy"] == "false" and not states[-1]["progress"]


def test_with_a_token_the_page_asks_for_it(browser, toy, env):
    from playwright.sync_api import expect

    with live_server(toy, {**env, "SEARCHENGINE_TOKEN": TOKEN}) as url:
        context = browser.new_context()
        page = context.new_page()
        page.goto(url)
        expect(page.locator("#token-dialog")).to_be_visible()
        page.keyboard.type(TOKEN)
        page.keyboard.press("Enter")
        expect(page.locator("#collection")).to_contain_text("60 photos")
        page.fill("#q", QUERY)
        page.keyboard.press("Enter")
        expect(page.locator("#message")).to_contain_text("24 photos")
        context.close()
        # http://HOST:PORT/#token=T opens straight away, and leaves no token in the bar.
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{url}/#token={TOKEN}")
        expect(page.locator("#collection")).to_contain_text("60 photos")
        assert "token" not in page.url
        context.close()


def save_screenshot(page, tmp_path: Path) -> None:
    shot = tmp_path / "screenshot.png"
    page.screenshot(path=str(shot))
    if os.environ.get("SEARCHENGINE_SCREENSHOT") or not SCREENSHOT.exists():
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)


def test_the_address_carries_the_search_so_back_forward_and_links_work(page, server, toy):
    from playwright.sync_api import expect

    page.goto(server)
    page.fill("#q", QUERY)
    page.locator("#options summary").click()
    expect(page.locator("#folder option")).to_have_count(3)  # all, and the two folders
    page.select_option("#folder", str(toy.photos / "album-a"))
    page.locator("#go").click()
    expect(page.locator("#message")).to_contain_text(f"photos for “{QUERY}”")
    searched = page.url
    assert "q=a+green+circle" in searched and "folder=" in searched
    first = card_names(page)[0]
    page.locator("#results .card").first.click()
    page.locator("#similar-btn").click()
    expect(page.locator("#message")).to_contain_text(f"photos for photos like {first}")
    assert "like=" in page.url and "q=" not in page.url
    assert page.input_value("#q") == ""  # the box no longer claims the old query
    assert page.input_value("#folder") == ""
    similar = card_names(page)

    page.go_back()
    expect(page.locator("#message")).to_contain_text(f"photos for “{QUERY}”")
    assert page.url == searched
    assert page.input_value("#q") == QUERY
    assert page.input_value("#folder") == str(toy.photos / "album-a")
    assert card_names(page)[0] == first
    page.go_forward()
    expect(page.locator("#message")).to_contain_text(f"photos for photos like {first}")
    assert card_names(page) == similar

    shared = page.url  # a link to "more like this" opens on the same results
    other = page.context.new_page()
    other.goto(shared)
    expect(other.locator("#message")).to_contain_text("photos for photos like #")
    assert card_names(other) == similar
    other.close()


def test_a_long_query_is_shortened_on_screen_and_never_cut_silently(browser, server):
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 390, "height": 844})  # a phone
    page = context.new_page()
    page.goto(server)
    words = " ".join(["a green circle"] * 130)  # 1,949 characters: within the bound
    page.fill("#q", words)
    page.keyboard.press("Enter")
    expect(page.locator("#message")).to_contain_text("photos for “a green circle")
    message = page.locator("#message")
    assert "…”" in message.inner_text()
    assert len(message.inner_text()) < 300
    assert message.bounding_box()["height"] < 160  # a few lines (it was 1,043 px)
    assert f"q={words[:20].replace(' ', '+')}" in page.url  # the whole query is in the link
    too_long = " ".join(["a red square"] * 160)  # 2,079 characters
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if "/api/search" in r.url else None)
    page.fill("#q", too_long)
    page.keyboard.press("Enter")
    expect(page.locator("#error")).to_contain_text(
        f"The query is {len(too_long)} characters long; keep it under 2000."
    )
    assert requests == []  # nothing sent, and nothing cut
    assert page.input_value("#q") == too_long
    context.close()


def test_the_same_photo_chosen_twice_searches_twice(page, server, toy, tmp_path):
    from playwright.sync_api import expect

    photo = next(p for p in toy.shows if p.endswith(".jpg"))
    name = os.path.basename(photo)
    page.goto(server)
    uploads: list[str] = []
    page.on("request", lambda r: uploads.append(r.url) if r.method == "POST" else None)
    page.locator("#options summary").click()
    for _ in range(2):
        page.set_input_files("#upload", photo)
        expect(page.locator("#message")).to_contain_text(f"24 photos for photos like {name}")
    assert len([u for u in uploads if "/api/similar" in u]) == 2
    assert card_names(page)[0] == name  # not in the catalog as an upload: itself first


def test_scores_say_what_they_are_and_weak_matches_say_so(page, server):
    from playwright.sync_api import expect

    page.goto(server)
    page.fill("#q", QUERY)
    page.keyboard.press("Enter")
    expect(page.locator("#message")).to_contain_text("ranked by cosine (-1 to 1)")
    assert "None matches well" not in page.locator("#message").inner_text()
    page.locator("#options summary").click()
    page.check("#rerank")
    page.keyboard.press("Enter")
    expect(page.locator("#message")).to_contain_text("ranked by CLIPScore (0 to 2.5)")
    assert "rerank=1" in page.url
    score = page.locator("#results .card .score").first
    assert score.get_attribute("title").startswith("CLIPScore (0 to 2.5)")
    page.locator("#results .card").first.click()
    expect(page.locator("#viewer-score")).to_contain_text("of 2.5 · cosine")
    page.keyboard.press("Escape")

    page.uncheck("#rerank")
    page.fill("#q", "a dog on a beach")  # nothing in the toy world looks like one
    page.keyboard.press("Enter")
    expect(page.locator("#message")).to_contain_text("None matches well")
    expect(page.locator("#message")).to_contain_text("These are the closest.")
    assert page.locator("#results .card.weak").count() == 24


def test_describe_it_waits_while_the_captioner_loads(page, server):
    from playwright.sync_api import expect

    answers = {"refused": 0}

    def loading_first(route) -> None:  # the first answer: the model is still loading
        if answers["refused"] == 0:
            answers["refused"] += 1
            route.fulfill(
                status=503,
                headers={"Retry-After": "1"},
                content_type="application/json",
                body='{"error": "the caption model is loading (3 s so far); try again in 1 s"}',
            )
            return
        route.continue_()

    page.goto(server)
    page.route("**/api/images/*/caption", loading_first)
    page.fill("#q", QUERY)
    page.keyboard.press("Enter")
    expect(page.locator("#message")).to_contain_text("24 photos")
    page.locator("#results .card").first.click()
    page.locator("#caption-btn").click()
    expect(page.locator("#viewer-caption")).to_contain_text("Trying again in 1 s")
    expect(page.locator("#caption-btn")).to_be_hidden(timeout=60_000)  # described
    assert answers["refused"] == 1
    caption = page.locator("#viewer-caption").inner_text()
    assert caption and "No caption" not in caption and "Trying" not in caption
