"""Who is calling: the master key or a virtual key, and what each may see and do.

Virtual keys are stored only as SHA-256 hashes. The master key is compared in constant time and
owns the objects it creates under the owner id `master`; it sees every key's objects.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from decimal import Decimal

from shared.errors import AuthenticationFailed, PermissionDenied, UnreadableRecord
from shared.records import MASTER_OWNER, KeyGrant
from shared.storage.ports import KeyStore

KEY_PREFIX = "sk-"
_MAX_KEY_CHARS = 256


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller. `owner` is stamped on everything it creates."""

    owner: str
    is_master: bool = False
    models: tuple[str, ...] | None = None
    max_budget: Decimal | None = None

    @property
    def scope(self) -> str | None:
        """The owner whose objects this caller sees, or None for all (the master key)."""
        return None if self.is_master else self.owner

    def can_see(self, owner: str) -> bool:
        return self.is_master or owner == self.owner

    def check_model(self, model: str) -> None:
        """Raise PermissionDenied unless this key may use `model`."""
        if self.models is not None and model not in self.models:
            raise PermissionDenied(
                f"This key is not allowed to use the model '{model}'.",
                code="model_not_allowed",
                param="model",
            )

    def require_master(self) -> None:
        if not self.is_master:
            raise PermissionDenied("Only the master key can manage keys.", code="master_key_required")


MASTER = Principal(owner=MASTER_OWNER, is_master=True)


def presented_key(authorization: str | None, api_key: str | None) -> str:
    """The key from `Authorization: Bearer <key>` or `api-key: <key>`; AuthenticationFailed if neither."""
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        raise AuthenticationFailed("Malformed Authorization header: expected 'Bearer <key>'.", code="invalid_api_key")
    if api_key and api_key.strip():
        return api_key.strip()
    raise AuthenticationFailed(
        "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.", code="missing_api_key"
    )


def authenticate(secret: str, *, master_key: str, keys: KeyStore) -> Principal:
    """The principal a presented key stands for; AuthenticationFailed for an unknown or revoked key."""
    if hmac.compare_digest(secret.encode(), master_key.encode()):
        return MASTER
    grant: KeyGrant | None = None
    if secret.startswith(KEY_PREFIX) and len(secret) <= _MAX_KEY_CHARS:
        try:
            grant = keys.find(hash_key(secret))
        except UnreadableRecord as exc:
            raise AuthenticationFailed(
                "This key's record cannot be read by the gateway; ask its operator to repair or reissue it.",
                code="invalid_api_key",
            ) from exc
    if grant is None:
        raise AuthenticationFailed("Incorrect API key provided.", code="invalid_api_key")
    return Principal(owner=grant.id, models=grant.models, max_budget=grant.max_budget)
