"""The functions' logging: Powertools' format and level for every library's logger, except the per-request
lines of the HTTP transport (one INFO line per provider call is most of a busy poller's log bill)."""

from __future__ import annotations

import logging

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

TRANSPORT_LOGGERS = frozenset({"httpx", "httpcore"})


def share_config(logger: Logger) -> None:
    """Give every registered logger `logger`'s handler and level; the transport's log warnings only."""
    copy_config_to_registered_loggers(source_logger=logger, exclude=set(TRANSPORT_LOGGERS))
    for name in TRANSPORT_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
