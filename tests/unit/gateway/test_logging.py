"""The gateway's logging config takes in the libraries' records (edge.gateway.service).

Users saw aiomqtt's "There are N pending publish calls" and amqtt's "1 messages not broadcasted"
as bare lines on the terminal during ``ngrid simulate``: those libraries log through ``logging``
(not ``print``) under loggers nobody had configured, so Python's last-resort handler wrote their
warnings to stderr. :func:`setup_logging` now sends them through the gateway's own handler.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.gateway.service import LIBRARY_LOGGERS, setup_logging


@pytest.fixture
def restore_loggers() -> Iterator[None]:
    names = ("ngrid", *LIBRARY_LOGGERS)
    saved = {n: (list(logging.getLogger(n).handlers), logging.getLogger(n).level) for n in names}
    propagate = {n: logging.getLogger(n).propagate for n in names}
    try:
        yield
    finally:
        for n, (handlers, level) in saved.items():
            logger = logging.getLogger(n)
            for h in logger.handlers:
                if h not in handlers:
                    h.close()
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate = propagate[n]


def test_the_libraries_log_under_the_names_the_gateway_configures() -> None:
    import aiomqtt.client
    import amqtt.broker

    assert aiomqtt.client.MQTT_LOGGER.name == "mqtt"  # "There are N pending publish calls."
    assert amqtt.broker.__name__ == "amqtt.broker"  # "N messages not broadcasted"
    assert {"amqtt", "mqtt", "transitions", "aiohttp"} <= set(LIBRARY_LOGGERS)


@pytest.mark.usefixtures("restore_loggers")
def test_library_warnings_go_to_the_log_file_not_the_terminal(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gateway.log"
    handler = setup_logging("info", path=path)
    logging.getLogger("amqtt.broker").warning("1 messages not broadcasted")
    logging.getLogger("mqtt").warning("There are %d pending publish calls.", 12)
    logging.getLogger("amqtt.broker").info("Broker closed")  # libraries: warnings and up
    logging.getLogger("ngrid.gateway").info("stopped")
    handler.flush()
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["level"], r["event"], r.get("logger")) for r in records] == [
        ("warning", "1 messages not broadcasted", "amqtt.broker"),
        ("warning", "There are 12 pending publish calls.", "mqtt"),
        ("info", "stopped", None),
    ]


@pytest.mark.usefixtures("restore_loggers")
def test_on_stderr_they_are_json_lines_like_the_gateways(capfd: pytest.CaptureFixture[str]) -> None:
    setup_logging("warning")
    logging.getLogger("amqtt.broker").warning("1 messages not broadcasted")
    logging.getLogger("ngrid.gateway").info("not at warning")
    _, err = capfd.readouterr()
    lines = err.splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["logger"] == "amqtt.broker"
