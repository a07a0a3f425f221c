"""The cached factory behind every handler: settings, AWS adapters, routing and providers, built once per cold start.

Nothing here runs at import time; the first `get_context()` call builds it, so moto (or the dev
stack's emulator) is always in place before any boto3 client exists. Tests call `reset_context()`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import boto3
from botocore.config import Config

from shared.providers import build_provider
from shared.providers.base import BatchProvider
from shared.routing import Deployment, RoutingConfig, load_routing
from shared.settings import Settings
from shared.storage.blobs import Blobs
from shared.storage.bus import Bus
from shared.storage.table import Table

# SigV4 for presigned downloads (short-lived, and the only signature every region takes); payloads not
# hashed into the signature, as botocore already does over HTTPS: TLS and the CRC32 checksum cover them,
# and an emulator over plain HTTP would otherwise cost a SHA-256 of every byte written
_S3 = Config(signature_version="s3v4", s3={"payload_signing_enabled": False})


@dataclass
class Context:
    settings: Settings
    table: Table
    blobs: Blobs
    bus: Bus
    routing: RoutingConfig
    _providers: dict[str, BatchProvider] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def provider(self, deployment: Deployment) -> BatchProvider:
        """The adapter for `deployment`, built on first use and kept for the life of the process."""
        with self._lock:
            provider = self._providers.get(deployment.key)
            if provider is None:
                provider = self._providers[deployment.key] = build_provider(deployment, self.blobs)
            return provider

    def close(self) -> None:
        """Close the providers' connections."""
        with self._lock:
            providers, self._providers = list(self._providers.values()), {}
        for provider in providers:
            provider.close()


_current: Context | None = None
_current_lock = threading.Lock()


def get_context() -> Context:
    """The process's context, built on first use."""
    global _current
    with _current_lock:
        if _current is None:
            _current = _build_context()
        return _current


def _build_context() -> Context:
    settings = Settings.from_env()
    session = boto3.session.Session()
    config = Config(
        max_pool_connections=settings.poll_concurrency + 8,
        retries={"mode": "standard", "max_attempts": 4},
        connect_timeout=5,
        read_timeout=30,
    )
    return Context(
        settings=settings,
        table=Table(session.client("dynamodb", config=config), settings.table_name),
        blobs=Blobs(session.client("s3", config=config.merge(_S3)), settings.bucket_name),
        bus=Bus(session.client("events", config=config), settings.event_bus_name),
        routing=load_routing(settings.config_source),
    )


def reset_context() -> None:
    """Close and forget the current context (tests; the dev stack after changing its environment)."""
    global _current
    with _current_lock:
        previous, _current = _current, None
    if previous is not None:
        previous.close()
