"""The one headless browser the page tests share: Debian's `chromium` (run_tests.sh installs it where
missing), driven by Playwright without Playwright's own browser download."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def require_chromium() -> str:
    """The Chromium binary, or skip (fail when VOICETUNE_REQUIRE_BROWSER is set, as in run_tests.sh)."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("VOICETUNE_REQUIRE_BROWSER"):
            pytest.fail(f"no Chromium at {CHROMIUM}: run_tests.sh installs it (apt-get install chromium)")
        pytest.skip("no system Chromium (apt-get install chromium)")
    return CHROMIUM


@contextmanager
def headless_browser() -> Iterator[Any]:
    """A launched headless Chromium (Playwright Browser), closed afterwards."""
    executable = require_chromium()
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()
