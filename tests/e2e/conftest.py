"""Fixtures of the end-to-end tests: the toy collection the web tests serve, and
Debian's Chromium, driven by Playwright.

Chromium is ``/usr/bin/chromium`` (``scripts/install_browser.sh`` installs it,
``scripts/test.sh`` runs that first); Playwright only drives it, it downloads nothing.
"""

from __future__ import annotations

import os
import shutil

import pytest
from fakehub import activate
from servertools import ToyCollection, build_toy_collection

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Headless as root on a machine with no network: no sandbox, no GPU, and nothing that
# phones home (each attempt would fail, slowly, on a closed network).
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip("no Chromium at /usr/bin/chromium: run scripts/install_browser.sh")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A fresh tab; the test fails if the page logs an error (a CSP violation, say)."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    context.close()
    # A 503 is expected where a test fakes one, or while toy-seg loads: the page waits
    # Retry-After and asks again.
    unexpected = [e for e in errors if "status of 503" not in e]
    assert not unexpected


@pytest.fixture(scope="module")
def toy(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, fake_hub
) -> ToyCollection:
    """The toy world indexed by the CLI with the shipped ``toy`` model, once a test
    module (the fake hub gives BLIP always, and CLIPS where ``toy`` is not shipped)."""
    with pytest.MonkeyPatch.context() as patch:
        activate(patch, fake_hub.hf_home)
        yield build_toy_collection(tmp_path_factory.mktemp(request.module.__name__))
