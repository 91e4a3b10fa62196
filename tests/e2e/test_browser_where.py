"""The large view's "Where is it?" overlay and "More like this part" drag, in real Chromium.

Same set-up as ``test_browser.py`` (Debian's Chromium driven by Playwright, the real
``searchengine serve`` in a child process on the toy collection), with ``toy-seg`` as the
server's CLIPSeg model.
"""

from __future__ import annotations

import os

import pytest
from servertools import ToyCollection, live_server
from test_browser import VIEWER_LOADED, wait_until

from searchengine.toy import masks as toymasks
from searchengine.toy import world as toyworld

pytestmark = [pytest.mark.browser, pytest.mark.slow]

QUERY = "a green circle"


@pytest.fixture(scope="module")
def server(toy: ToyCollection, fake_hub) -> str:
    env = {**os.environ, **fake_hub.env()}
    with live_server(toy, env, "--where-model", "toy-seg") as url:
        yield url


def _regions(toy: ToyCollection, path: str) -> tuple[toymasks.ObjectRegion, ...]:
    items = toyworld.load_manifest(toy.photos)
    scene = next(i.scene for i in items if os.path.abspath(toy.photos / i.path) == path)
    return toymasks.scene_regions(scene)[1]


def test_where_is_it_overlays_the_query_heatmap(page, server, toy, tmp_path) -> None:
    from playwright.sync_api import expect

    expected = toy.cli_json("search", QUERY, "-k", "24")
    page.goto(f"{server}/?q=a+green+circle")
    expect(page.locator("#message")).to_contain_text(f"24 photos for “{QUERY}”")
    page.locator("#results .card").first.click()
    expect(page.locator("#viewer")).to_be_visible()
    wait_until(page, VIEWER_LOADED)
    button = page.locator("#where-btn")
    expect(button).to_be_visible()
    button.click()
    where = page.locator("#viewer-where")
    expect(where).to_contain_text("found", timeout=60_000)
    if toy.semantic:  # the first result shows a green circle: toy-seg finds it
        expect(where).to_contain_text(f"“{QUERY}” found")
    expect(button).to_have_attribute("aria-pressed", "true")
    assert "/where.png?q=a%20green%20circle" in page.locator("#viewer-img").get_attribute("src")
    wait_until(page, VIEWER_LOADED)
    page.screenshot(path=str(tmp_path / "where.png"))
    button.click()  # back to the photo
    assert page.locator("#viewer-img").get_attribute("src").endswith("size=large")
    assert expected  # the page showed the CLI's first result


def test_dragging_a_box_searches_by_that_part(page, server, toy) -> None:
    from playwright.sync_api import expect

    query = next(p for p, caption in sorted(toy.shows.items()) if " and " in caption)
    name = os.path.basename(query)
    page.goto(server)
    # Find the photo by its own caption, as the CLI ranks it, and open it.
    hits = toy.cli_json("search", toy.shows[query], "-k", "60")
    index = [h["path"] for h in hits].index(query)
    page.fill("#q", toy.shows[query])
    page.keyboard.press("Enter")
    expect(page.locator("#message")).to_contain_text("photos for")
    while page.locator("#results .card").count() <= index:
        page.locator("#more").click()
    page.locator("#results .card").nth(index).click()
    wait_until(page, VIEWER_LOADED)
    expect(page.locator("#part-btn")).to_be_disabled()

    target = _regions(toy, query)[0]
    img = page.locator("#viewer-img").bounding_box()
    assert img is not None
    fx, fy = img["width"] / 640, img["height"] / 480
    x0, y0, x1, y1 = target.box
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if "similar-part" in r.url else None)
    page.mouse.move(img["x"] + x0 * fx, img["y"] + y0 * fy)
    page.mouse.down()
    page.mouse.move(img["x"] + (x0 + x1) / 2 * fx, img["y"] + (y0 + y1) / 2 * fy, steps=4)
    page.mouse.move(img["x"] + x1 * fx, img["y"] + y1 * fy, steps=4)
    page.mouse.up()
    expect(page.locator("#part-box")).to_be_visible()
    expect(page.locator("#part-btn")).to_be_enabled()
    expect(page.locator("#part-help")).to_contain_text("chosen")
    page.locator("#part-btn").click()
    expect(page.locator("#message")).to_contain_text(f"photos for photos like a part of {name}")

    box = sent[-1].split("box=")[1].split("&")[0].replace("%2C", ",")
    bx0, by0, bx1, by1 = (int(v) for v in box.split(","))
    # The page sends the dragged box in the photo's own pixels.
    assert abs(bx0 - x0) <= 4 and abs(by0 - y0) <= 4 and abs(bx1 - x1) <= 4 and abs(by1 - y1) <= 4
    expected = toy.cli_json("similar", query, "--region", box, "-k", "24")
    shown = page.locator("#results .card .name").all_inner_texts()
    assert shown == [os.path.basename(r["path"]) for r in expected]
    assert name not in shown
