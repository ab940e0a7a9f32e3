from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Router, routers

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, why: str) -> None:
    """Skip on a developer's machine that lacks something; fail in CI."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI must run this test: {why}")
    pytest.skip(why)


@pytest.fixture
def router(tmp_path: Path) -> Iterator[Router]:
    """One ``python -m app`` on loopback with its own data folder."""
    with routers(tmp_path, "alpha", extra=["--no-mesh"]) as (r,):
        yield r
