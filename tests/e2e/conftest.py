"""Fixtures of the browser tests: Debian's Chromium, driven by Playwright.

Chromium is ``/usr/bin/chromium`` (``scripts/install_browser.sh`` installs it,
``scripts/test.sh`` runs that first); Playwright only drives it, it downloads nothing.
"""

from __future__ import annotations

import os
import shutil

import pytest

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
