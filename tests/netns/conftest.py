"""Fixtures for the namespace tests: a lab per test, always torn down."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.netns import netlab


@pytest.fixture(scope="session")
def netns_sweep() -> None:
    """Once per session: remove namespaces left by earlier runs that crashed."""
    if netlab.available():
        netlab.sweep()


@pytest.fixture
def make_lab(
    netns_sweep: None, request: pytest.FixtureRequest
) -> Iterator[Callable[[], netlab.Lab]]:
    """A factory: call it (after ``require``) to build a lab; it is removed at teardown,
    whether the test passed, failed or was interrupted."""
    labs: list[netlab.Lab] = []

    def make() -> netlab.Lab:
        lab = netlab.Lab()
        labs.append(lab)
        return lab

    def close_all() -> None:
        errors = []
        for lab in reversed(labs):
            try:
                lab.close()
            except Exception as e:
                errors.append(e)
        if errors:
            raise errors[0]

    request.addfinalizer(close_all)
    yield make
