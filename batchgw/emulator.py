"""moto, the AWS emulator of the dev stack and the tests, made as atomic as the services it stands in for.

DynamoDB applies each conditional write and transaction atomically; moto's backend checks a condition and
writes in separate steps, so two threads can both pass one condition (two budgets admitted where one fits).
`atomic_dynamodb_writes` serializes its writes, as the service does, so concurrency is tested against
batchgw and not against the emulator.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

_WRITES = ("put_item", "update_item", "delete_item", "transact_write_items")
_lock = threading.RLock()
_applied = False


def atomic_dynamodb_writes() -> None:
    """Serialize moto's DynamoDB writes in this process (once; idempotent)."""
    global _applied
    from moto.dynamodb.models import DynamoDBBackend

    with _lock:
        if _applied:
            return
        for name in _WRITES:
            setattr(DynamoDBBackend, name, _serialized(getattr(DynamoDBBackend, name)))
        _applied = True


def _serialized(write: Callable[..., Any]) -> Callable[..., Any]:
    def serialized(*args: Any, **kwargs: Any) -> Any:
        with _lock:
            return write(*args, **kwargs)

    return serialized


def start_server() -> tuple[Any, str]:
    """moto's server on 127.0.0.1 (a free port), with atomic DynamoDB writes; (server, endpoint URL)."""
    from moto.server import ThreadedMotoServer

    atomic_dynamodb_writes()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"
