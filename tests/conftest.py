"""Fixtures shared by every test tier."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from tests.brokers import Broker, running_mosquitto


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One anonymous Mosquitto for the session; tests keep apart by unique topics."""
    with running_mosquitto(tmp_path_factory.mktemp("mosquitto")) as broker:
        yield broker


@pytest.fixture
def mosquitto_factory(
    tmp_path: Path,
) -> Callable[..., AbstractContextManager[Broker]]:
    """Start a broker with its own credentials or ACL: ``with mosquitto_factory(users=...)``."""
    count = 0

    def start(**kwargs: Any) -> AbstractContextManager[Broker]:
        nonlocal count
        count += 1
        return running_mosquitto(tmp_path / f"broker{count}", **kwargs)

    return start


@pytest.fixture
def topic_prefix() -> str:
    """A topic prefix no other test uses."""
    return f"test/{uuid.uuid4().hex[:12]}"
