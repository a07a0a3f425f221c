"""The dev stack runs many invocations in one process: each one's log lines still name its own function."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import orjson
import pytest
from fastapi.testclient import TestClient

from batchgw import template
from batchgw.devstack import ApiGateway, LambdaContext, deliver, invoke, logged_as
from shared.deadline import Deadline
from shared.errors import ProviderError
from shared.logs import share_config
from tests.fakes import log_probe
from tests.unit.conftest import World, chat_lines


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


def test_the_pollers_worker_threads_log_as_the_poller(world: World, caplog: pytest.LogCaptureFixture) -> None:
    # the poller polls each deployment's batches on threads it starts; their lines named whichever function
    # had run last in the dev stack, since a new thread starts without its starter's context
    world.submission.submit(world.create(chat_lines(["a"])))
    world.provider.fail_refresh = ProviderError("503", retryable=True)
    with caplog.at_level(logging.WARNING, logger="shared.polling"), logged_as(LambdaContext("PollerFunction")):
        assert world.poller.tick(Deadline.after(30))["provider_error"] == 1
    (line,) = [record for record in caplog.records if record.getMessage().startswith("provider call failed")]
    assert str(line.threadName).startswith("poll-deployment")
    assert vars(line)["function_name"] == "PollerFunction"


def test_a_failed_delivery_is_logged_as_its_own_function(caplog: pytest.LogCaptureFixture) -> None:
    # its record was made after its invocation had ended, so it carried no name of its own and took
    # Powertools' process-wide keys: whichever function set them last (in the dev stack, often another)
    share_config(log_probe.logger)
    with caplog.at_level(logging.ERROR, logger="batchgw.dev"):
        assert deliver(_function("ProbeB"), {"fail": True}, then="; the event will be retried") is False

    (failure,) = [r for r in caplog.records if r.name == "batchgw.dev"]
    assert failure.getMessage() == "ProbeB failed; the event will be retried" and failure.exc_info is not None
    assert failure.__dict__.get("function_name") == "ProbeB"
