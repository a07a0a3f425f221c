"""The functions' logging: Powertools' format and level for every library's logger, except the per-request
lines of the HTTP transport (one INFO line per provider call is most of a busy poller's log bill); and their
metrics, which are log lines too (CloudWatch's embedded metric format)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, cast

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics.functions import is_metrics_disabled

TRANSPORT_LOGGERS = frozenset({"httpx", "httpcore"})


def share_config(logger: Logger) -> None:
    """Give every registered logger `logger`'s handler and level; the transport's log warnings only."""
    copy_config_to_registered_loggers(source_logger=logger, exclude=set(TRANSPORT_LOGGERS))
    for name in TRANSPORT_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def log_metrics[H: Callable[..., Any]](metrics: Metrics) -> Callable[[H], H]:
    """Powertools' `log_metrics` for a handler, with its cold start metric only when metrics are on (the
    template's EnableCustomMetrics). Powertools prints the cold start metric through `single_metric`, which
    does not heed POWERTOOLS_METRICS_DISABLED: with metrics off, each function's cold starts would still make
    a custom metric, billed for every hour one happens. Decided at import, as Lambda's environment is fixed."""
    return cast(Callable[[H], H], metrics.log_metrics(capture_cold_start_metric=not is_metrics_disabled()))
