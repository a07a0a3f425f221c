"""The composition roots' cached factory: settings, AWS adapters, routing and providers, built once per
cold start; each function's app.py composes its use case from them, passing each port explicitly.

Nothing here runs at import time; the first `runtime()` call builds it, so moto (or the dev stack's
emulator) is always in place before any boto3 client exists. Tests call `reset_runtime()`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import boto3
from botocore.config import Config

from shared.providers.registry import ProviderDeps, Providers
from shared.routing import RoutingConfig, load_routing
from shared.settings import Settings
from shared.storage.batch_store import DynamoBatchStore
from shared.storage.blobs import S3Blobs
from shared.storage.bus import EventBus
from shared.storage.claim_store import DynamoClaimStore
from shared.storage.dynamo import Dynamo
from shared.storage.file_store import DynamoFileStore
from shared.storage.key_store import DynamoKeyStore
from shared.storage.queue import SqsFifoQueue, SqsWorkQueue
from shared.storage.upload_store import DynamoUploadStore

# SigV4 for presigned downloads (short-lived, and the only signature every region takes); payloads not
# hashed into the signature, as botocore already does over HTTPS: TLS and the CRC32 checksum cover them,
# and an emulator over plain HTTP would otherwise cost a SHA-256 of every byte written
_S3: Final = Config(signature_version="s3v4", s3={"payload_signing_enabled": False})

# Each is given the runtime's boto3 session before any client is made from it. Empty in the functions; the
# benchmarks' cost model (bench/metering.py) registers botocore event handlers here to count every AWS call.
SESSION_HOOKS: Final[list[Callable[[boto3.session.Session], None]]] = []


@dataclass(frozen=True)
class Runtime:
    """The adapters of one process."""

    settings: Settings
    batch_store: DynamoBatchStore
    file_store: DynamoFileStore
    upload_store: DynamoUploadStore
    key_store: DynamoKeyStore
    claim_store: DynamoClaimStore
    blobs: S3Blobs
    bus: EventBus
    routing: RoutingConfig
    providers: Providers
    work_queue: SqsWorkQueue | None
    sync_queue: SqsFifoQueue | None


def _build() -> Runtime:
    settings = Settings.from_env()
    session = boto3.session.Session()
    for hook in SESSION_HOOKS:
        hook(session)
    config = Config(
        max_pool_connections=settings.poll_concurrency + 8,
        retries={"mode": "standard", "max_attempts": 4},
        connect_timeout=5,
        read_timeout=30,
    )
    db = Dynamo(session.client("dynamodb", config=config), settings.table_name)
    blobs = S3Blobs(session.client("s3", config=config.merge(_S3)), settings.bucket_name)
    sqs = session.client("sqs", config=config)
    sync_queue = SqsFifoQueue(sqs, settings.sync_queue_url) if settings.sync_queue_url else None
    return Runtime(
        settings=settings,
        batch_store=DynamoBatchStore(db),
        file_store=DynamoFileStore(db),
        upload_store=DynamoUploadStore(db),
        key_store=DynamoKeyStore(db),
        claim_store=DynamoClaimStore(db),
        blobs=blobs,
        bus=EventBus(session.client("events", config=config), settings.event_bus_name),
        routing=load_routing(settings.config_source),
        providers=Providers(ProviderDeps(blobs=blobs, session=session, clock=time.time, sync_queue=sync_queue)),
        work_queue=SqsWorkQueue(sqs, settings.poll_queue_url) if settings.poll_queue_url else None,
        sync_queue=sync_queue,
    )


_current: Runtime | None = None
_lock = threading.Lock()


def runtime() -> Runtime:
    """The process's runtime, built on first use."""
    global _current
    with _lock:
        if _current is None:
            _current = _build()
        return _current


def reset_runtime() -> None:
    """Close and forget the runtime (tests; the dev stack after changing its environment)."""
    global _current
    with _lock:
        previous, _current = _current, None
    if previous is not None:
        previous.providers.close()
