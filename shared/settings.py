"""Settings: one typed, frozen model read from the environment once per cold start."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class SettingsError(Exception):
    """The environment is missing or misstates a setting; the message names which."""


# environment variable -> field
_ENV = {
    "BATCHGW_TABLE": "table_name",
    "BATCHGW_BUCKET": "bucket_name",
    "BATCHGW_EVENT_BUS": "event_bus_name",
    "BATCHGW_CONFIG": "config_source",
    "BATCHGW_MASTER_KEY": "master_key_ref",
    "BATCHGW_MAX_REQUEST_BYTES": "max_request_bytes",
    "BATCHGW_MAX_RESPONSE_BYTES": "max_response_bytes",
    "BATCHGW_POLL_CONCURRENCY": "poll_concurrency",
    "BATCHGW_SUBMIT_STUCK_SECONDS": "submit_stuck_seconds",
    "BATCHGW_FINALIZE_STUCK_SECONDS": "finalize_stuck_seconds",
    "BATCHGW_SUBMIT_LEASE_SECONDS": "submit_lease_seconds",
    "BATCHGW_MAX_REDRIVES": "max_redrives",
    "BATCHGW_POLL_QUEUE": "poll_queue_url",
    "BATCHGW_FANOUT_THRESHOLD": "fanout_threshold",
    "BATCHGW_SPLIT_THRESHOLD": "split_threshold",
    "BATCHGW_SYNC_QUEUE": "sync_queue_url",
}


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    table_name: str = Field(min_length=1)
    bucket_name: str = Field(min_length=1)
    event_bus_name: str = Field(min_length=1)
    # the routing file: a path, or ssm:/parameter/name
    config_source: str = Field(min_length=1)
    # the master key: a literal (dev only), env:NAME, ssm:/path or secretsmanager:NAME
    master_key_ref: str = Field(min_length=1)
    # API Gateway hands Lambda at most 6 MB, base64-encoded for binary bodies: 4 MiB raw fits in both ways
    max_request_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    max_response_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    presign_seconds: int = Field(default=300, gt=0)
    # provider calls at once per deployment, in one poller invocation
    poll_concurrency: int = Field(default=32, gt=0, le=256)
    # the SQS queue the scheduled poller fans out through, one range of the work index (a deployment's batches)
    # a message, once the work is larger than `fanout_threshold` batches (the scheduled run reads at most that
    # many to know)
    poll_queue_url: str | None = None
    fanout_threshold: int = Field(default=5_000, gt=0)
    # the most batches one invocation polls of the range it was handed: past it, it hands the rest of the range
    # on, so one deployment's batches are split among invocations (in AWS, 12,500 take about 30-39 s of the
    # poller's 55 at 512 MB)
    split_threshold: int = Field(default=12_500, gt=0)
    # the FIFO queue where sync deployments' chunks of requests wait for the sync worker (shared/providers/sync.py)
    sync_queue_url: str | None = None
    # the poller re-drives a batch stuck this long, at most max_redrives times, then fails it
    submit_stuck_seconds: int = Field(default=300, ge=0)
    finalize_stuck_seconds: int = Field(default=600, ge=0)
    max_redrives: int = Field(default=5, gt=0)
    # how long a submitter holds a batch; longer than the submitter function's timeout
    submit_lease_seconds: int = Field(default=600, gt=0)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values = {field: env[name] for name, field in _ENV.items() if env.get(name)}
        in_aws = bool(env.get("AWS_LAMBDA_FUNCTION_NAME")) and not env.get("AWS_SAM_LOCAL")
        if in_aws and not values.get("master_key_ref", "").startswith(("secretsmanager:", "ssm:")):
            raise SettingsError(
                "BATCHGW_MASTER_KEY must name a secret in AWS (secretsmanager:NAME or ssm:/path), not hold the key"
            )
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            fields = {v: k for k, v in _ENV.items()}
            problems = "; ".join(f"{fields.get(str(e['loc'][0]), e['loc'][0])}: {e['msg']}" for e in exc.errors())
            raise SettingsError(f"invalid batchgw settings: {problems}") from None
