"""A function for the dev stack's log tests: a Lambda handler and an API app that each log one line naming
the function they were called as, after `ARRIVED` says every concurrent caller is inside; the handler logs
from a worker thread of its own when its event asks, as the poller's and the listing's do, and fails when
its event asks."""

from __future__ import annotations

import logging
import threading
from typing import Any

from aws_lambda_powertools import Logger
from fastapi import FastAPI

from shared.threads import Pool

logger = Logger(service="batchgw")
probe = logging.getLogger("shared.log_probe")  # a module logger, as the domain's are
ARRIVED = threading.Barrier(2)


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> None:
    if event.get("fail"):
        raise RuntimeError("the probe failed, as asked")
    ARRIVED.wait(timeout=10)  # both invocations have set their Powertools context keys
    if event.get("in_thread"):
        with Pool(max_workers=1) as pool:
            pool.submit(probe.warning, "probe", extra={"called_as": event["called_as"]}).result()
    else:
        probe.warning("probe", extra={"called_as": event["called_as"]})


app = FastAPI()


@app.get("/{called_as}/probe")
def probe_route(called_as: str) -> dict[str, str]:
    ARRIVED.wait(timeout=10)
    probe.warning("probe", extra={"called_as": called_as})
    return {}
