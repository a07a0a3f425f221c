"""AWS's published on-demand prices in us-east-1 (N. Virginia), x86, as the cost model uses them.

Written down on 2026-12-01 from the public pricing pages below. This machine has no network, so they were
not fetched that day: they are the pages' figures as last read (DynamoDB's on-demand prices after the
November 2024 halving). Free tiers are not applied: each figure is what the usage costs once past them.

- Lambda: https://aws.amazon.com/lambda/pricing/ (requests, GB-seconds at 1 ms granularity; the init phase
  is billed like the handler's duration since 2025-08-01)
- API Gateway HTTP APIs: https://aws.amazon.com/api-gateway/pricing/ (first 300 million a month; metered in
  512 KB increments)
- DynamoDB on-demand: https://aws.amazon.com/dynamodb/pricing/on-demand/
- S3 Standard: https://aws.amazon.com/s3/pricing/ (PUT, COPY, POST, LIST; GET and the other reads; DELETE is
  free)
- EventBridge: https://aws.amazon.com/eventbridge/pricing/ (custom events in 64 KB chunks; Scheduler
  invocations)
- SQS standard: https://aws.amazon.com/sqs/pricing/ (requests in 64 KB chunks)
- SNS: https://aws.amazon.com/sns/pricing/ (publishes)
- CloudWatch: https://aws.amazon.com/cloudwatch/pricing/ (log ingestion, custom metrics prorated by the hour,
  standard alarms, dashboards)
- X-Ray: https://aws.amazon.com/xray/pricing/ (traces recorded)
- Secrets Manager: https://aws.amazon.com/secrets-manager/pricing/
- Data transfer out to the internet: https://aws.amazon.com/ec2/pricing/on-demand/ (first 10 TB a month)
"""

from __future__ import annotations

from typing import Final

PRICES_DATE: Final = "2026-12-01"
HOURS_PER_MONTH: Final = 730  # AWS's month for hourly-prorated items

LAMBDA_REQUEST: Final = 0.20 / 1e6
LAMBDA_GB_SECOND: Final = 0.0000166667
HTTP_API_REQUEST: Final = 1.00 / 1e6
HTTP_API_METERING_BYTES: Final = 512 * 1024
DYNAMODB_WRU: Final = 0.625 / 1e6
DYNAMODB_RRU: Final = 0.125 / 1e6
S3_PUT_CLASS: Final = 0.005 / 1000
S3_GET_CLASS: Final = 0.0004 / 1000
EVENTBRIDGE_EVENT: Final = 1.00 / 1e6
SCHEDULER_INVOCATION: Final = 1.00 / 1e6
SQS_REQUEST: Final = 0.40 / 1e6
SNS_PUBLISH: Final = 0.50 / 1e6
LOGS_INGESTED_GB: Final = 0.50
CUSTOM_METRIC_MONTH: Final = 0.30
ALARM_MONTH: Final = 0.10
DASHBOARD_MONTH: Final = 3.00
XRAY_TRACE: Final = 5.00 / 1e6
SECRET_MONTH: Final = 0.40
SECRETS_API_CALL: Final = 0.05 / 10_000
TRANSFER_OUT_GB: Final = 0.09

# what each usage figure of bench/metering.py costs per unit, and how the cost model names it
PER_UNIT: Final[dict[str, tuple[float, str]]] = {
    "lambda_requests": (LAMBDA_REQUEST, "Lambda invocations"),
    "lambda_gb_seconds": (LAMBDA_GB_SECOND, "Lambda duration (handler)"),
    "init_gb_seconds": (LAMBDA_GB_SECOND, "Lambda duration (cold-start init)"),
    "api_requests": (HTTP_API_REQUEST, "API Gateway HTTP API requests"),
    "dynamodb_rru": (DYNAMODB_RRU, "DynamoDB reads (RRU)"),
    "dynamodb_wru": (DYNAMODB_WRU, "DynamoDB writes (WRU)"),
    "s3_put_class": (S3_PUT_CLASS, "S3 PUT/COPY/POST/LIST requests"),
    "s3_get_class": (S3_GET_CLASS, "S3 GET and other requests"),
    "eventbridge_events": (EVENTBRIDGE_EVENT, "EventBridge custom events"),
    "scheduler_invocations": (SCHEDULER_INVOCATION, "EventBridge Scheduler invocations"),
    "sqs_requests": (SQS_REQUEST, "SQS requests"),
    "sns_publishes": (SNS_PUBLISH, "SNS publishes (Batch Completed rule)"),
    "log_gb": (LOGS_INGESTED_GB, "CloudWatch Logs ingestion"),
    "xray_traces": (XRAY_TRACE, "X-Ray traces"),
    "secrets_api_calls": (SECRETS_API_CALL, "Secrets Manager API calls"),
    "transfer_out_gb": (TRANSFER_OUT_GB, "data transfer out to the internet"),
    "metric_hours": (CUSTOM_METRIC_MONTH / HOURS_PER_MONTH, "custom metrics (metric-hours)"),
}


def priced(usage: dict[str, float]) -> dict[str, float]:
    """Each usage figure's cost in dollars, by its name in PER_UNIT (figures without a price are left out)."""
    return {PER_UNIT[k][1]: v * PER_UNIT[k][0] for k, v in usage.items() if k in PER_UNIT}
