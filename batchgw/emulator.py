"""moto, the AWS emulator of the dev stack and the tests, made as atomic as the services it stands in for.

DynamoDB applies each conditional write and transaction atomically; moto's backend checks a condition and
writes in separate steps, so two threads can both pass one condition (two budgets admitted where one fits).
Its reads are not pure either: a `get_item` or `query` of an absent partition inserts an empty one, which
breaks a transaction deep-copying the table at that moment, or a query iterating it. And its answers are
made from the stored items after the backend is done: an update deep-copies the item it is about to
change, a read lists the item's attributes, while another thread's write may be changing them.
`atomic_dynamodb` serializes each DynamoDB request, from reading it to writing its answer, as the service
isolates them, so concurrency is tested against batchgw and not against the emulator.

moto's server finds each request's service by listing its own package directory (a listdir and a stat per
service) while it holds its one dispatch lock; each system call lets other threads take the interpreter,
so under load the lock's holder waits for it again call after call and every request of the stack queues
behind. `prepare` (which `start_server` runs) lists the directory once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

_lock = threading.RLock()
_applied = False


def atomic_dynamodb() -> None:
    """Serialize moto's DynamoDB requests in this process, each from its parameters to its answer (once;
    idempotent)."""
    global _applied
    from moto.dynamodb.responses import DynamoHandler

    with _lock:
        if _applied:
            return
        DynamoHandler.call_action = _serialized(DynamoHandler.call_action)  # type: ignore[method-assign]
        _applied = True


def _serialized(operation: Callable[..., Any]) -> Callable[..., Any]:
    def serialized(*args: Any, **kwargs: Any) -> Any:
        with _lock:
            return operation(*args, **kwargs)

    return serialized


def prepare() -> None:
    """moto, in this process, as the dev stack runs it: atomic DynamoDB, services listed once (idempotent)."""
    atomic_dynamodb()
    _list_services_once()


def _list_services_once() -> None:
    """Make moto's dispatcher read its list of services from memory (the package does not change)."""
    from moto import backends

    with _lock:
        services = tuple(backends.list_of_moto_modules())
        backends.list_of_moto_modules = lambda: services


def start_server() -> tuple[Any, str]:
    """moto's server on 127.0.0.1 (a free port), with atomic DynamoDB writes and a dispatcher that does not
    touch the disk; (server, endpoint URL)."""
    from moto.server import ThreadedMotoServer

    prepare()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"
