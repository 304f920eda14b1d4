"""The reliability suite: every scenario records its figures with the ``reliability`` fixture;
at the end of the session they are merged into docs/reliability.json and docs/reliability.md."""

from __future__ import annotations

import pytest

from tests.reliability.report import Recorder

_RECORDER = Recorder()


@pytest.fixture(scope="session")
def reliability() -> Recorder:
    return _RECORDER


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _RECORDER:
        _RECORDER.write()
