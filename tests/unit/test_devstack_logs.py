"""The dev stack runs many invocations in one process: each one's log lines still name its own function."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import orjson
import pytest
from fastapi.testclient import TestClient

from batchgw import template
from batchgw.devstack import ApiGateway, invoke
from shared.logs import share_config
from tests.fakes import log_probe


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(orjson.loads(self.format(record)))


@pytest.fixture
def lines() -> Iterator[list[dict[str, object]]]:
    share_config(log_probe.logger)  # as every function's handler module does
    handler = Lines()
    handler.setFormatter(log_probe.logger.registered_formatter)
    probe = logging.getLogger("shared.log_probe")
    probe.addHandler(handler)
    log_probe.ARRIVED.reset()
    yield handler.lines
    probe.removeHandler(handler)


def _function(name: str, **events: dict[str, object]) -> template.Function:
    return template.Function(name, "tests.fakes.log_probe.handler", dict(events), {})


def _each_line_names_its_caller(lines: list[dict[str, object]]) -> None:
    probes = [line for line in lines if line["message"] == "probe"]
    assert len(probes) == 2
    assert {line["called_as"] for line in probes} == {"ProbeA", "ProbeB"}
    for line in probes:
        assert line["function_name"] == line["called_as"], line


@pytest.mark.parametrize("in_thread", [False, True], ids=["in-its-thread", "in-a-worker-thread-it-starts"])
def test_concurrent_invocations_log_as_their_own_function(lines: list[dict[str, object]], in_thread: bool) -> None:
    # two functions run at once, each past Powertools setting its (process-wide) context keys before logging
    threads = [
        threading.Thread(target=invoke, args=(_function(name), {"called_as": name, "in_thread": in_thread}))
        for name in ("ProbeA", "ProbeB")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    _each_line_names_its_caller(lines)


def test_api_requests_log_as_the_function_whose_route_they_took(lines: list[dict[str, object]]) -> None:
    def route(path: str) -> dict[str, object]:
        return {"Type": "HttpApi", "Properties": {"Method": "GET", "Path": path}}

    gateway = ApiGateway(
        [_function("ProbeA", Api=route("/ProbeA/probe")), _function("ProbeB", Api=route("/ProbeB/probe"))]
    )
    with TestClient(gateway) as api:
        threads = [threading.Thread(target=api.get, args=(f"/{name}/probe",)) for name in ("ProbeA", "ProbeB")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)
    _each_line_names_its_caller(lines)
