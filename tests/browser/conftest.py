"""Headless Chromium for the browser tests: found here, never installed by a test.

Outside CI a machine without Chromium skips these tests, saying what to install; in CI
(``CI=true``) a missing browser fails them, so a broken install step cannot pass unnoticed.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from .cdp import Browser

# Debian's chromium package puts its launcher here; CHROMIUM names another binary.
CANDIDATES = ("chromium", "chromium-browser")
INSTALL_HINT = "apt-get install chromium (Debian's package; ./run-tests installs it)"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def find_chromium() -> str | None:
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    found = find_chromium()
    if found is None:
        message = f"Chromium is not installed: {INSTALL_HINT}"
        if in_ci():
            pytest.fail(f"CI=true: the browser tests must run, but {message}", pytrace=False)
        pytest.skip(message)
    return found


@pytest.fixture
def browser(chromium: str, tmp_path: Path) -> Iterator[Browser]:
    """A fresh headless Chromium (its own profile directory), quit after the test."""
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    with Browser.launch(chromium, profile, tmp_path / "chromium.log") as running:
        yield running
