"""Secret references in settings and the routing file: a literal, env:NAME, ssm:/path or secretsmanager:NAME.

SSM and Secrets Manager values come through Powertools parameters, cached for five minutes so a
warm function does not call AWS on every request; `force_fetch` reads past the cache, for a value the
provider has just refused (a rotated key, an expired token). Values are never logged.
"""

from __future__ import annotations

import os

SECRET_CACHE_SECONDS = 300


class SecretError(Exception):
    """A secret reference could not be resolved; the message names the reference, never a value."""


def resolve_secret(ref: str, *, force_fetch: bool = False) -> str:
    """The value `ref` stands for; with `force_fetch`, read afresh from its store rather than the cache."""
    scheme, sep, name = ref.partition(":")
    if not sep or scheme not in ("env", "ssm", "secretsmanager"):
        return ref
    if not name:
        raise SecretError(f"empty secret reference {ref!r}")
    if scheme == "env":
        value = os.environ.get(name)
        if value is None:
            raise SecretError(f"environment variable {name} (from {ref!r}) is not set")
        return value
    from aws_lambda_powertools.utilities import parameters

    try:
        if scheme == "ssm":
            return parameters.get_parameter(name, decrypt=True, max_age=SECRET_CACHE_SECONDS, force_fetch=force_fetch)
        value = parameters.get_secret(name, max_age=SECRET_CACHE_SECONDS, force_fetch=force_fetch)
    except parameters.exceptions.GetParameterError as exc:
        # the AWS error names the reference and the reason, never a value
        raise SecretError(f"cannot read {ref!r}: {exc}") from None
    return value if isinstance(value, str) else value.decode()
