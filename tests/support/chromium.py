"""Real Chromium for the browser tests, driven by Playwright's sync API.

Debian's Chromium (test-environment.md §Browser): Playwright's own browsers are never
downloaded. Make the database rows a test needs before entering ``chromium()``: while
Playwright's event loop runs in this thread, Django refuses ORM calls here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium(*, orm_reads: bool = False) -> Iterator[Any]:
    """A headless Chromium (a Playwright ``Browser``), closed on exit.

    ``orm_reads``: the test reads the portal's rows while the browser is open. Playwright's
    sync API runs an event loop in this thread, and Django then refuses ORM calls here,
    though nothing runs concurrently; this allows them, on a connection closed at the end.
    """
    if not os.path.exists(CHROMIUM):
        pytest.fail("Chromium is missing: apt-get install -y --no-install-recommends chromium")
    from django.db import connections
    from playwright.sync_api import sync_playwright

    if orm_reads:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                yield browser
            finally:
                browser.close()
                if orm_reads:
                    # Inside Playwright's context: the reads' connection belongs to it.
                    connections.close_all()
    finally:
        if orm_reads:
            del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium for a test module, whose tests may read the portal's rows meanwhile."""
    with chromium(orm_reads=True) as running:
        yield running


def admin_login(page: Any, base_url: str, *, username: str, password: str, next_path: str) -> None:
    """Log ``page`` in to the Django admin at ``base_url`` and land on ``next_path``."""
    page.goto(f"{base_url}/admin/login/?next={next_path}")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_url(f"{base_url}{next_path}")
