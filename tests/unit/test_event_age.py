"""The poller gives up on a step only once AWS can no longer deliver the event that would have run it."""

from __future__ import annotations

import pytest

from batchgw import template
from shared.polling import stuck_after
from shared.settings import Settings

# what AWS keeps an event for when nothing says otherwise: EventBridge retries delivery for 24 hours, and
# Lambda holds an asynchronous invocation for 6 hours while its function is throttled
EVENTBRIDGE_DEFAULT_AGE = 24 * 3600
LAMBDA_DEFAULT_AGE = 6 * 3600


@pytest.mark.parametrize(
    ("function", "rule", "stuck"),
    [
        ("SubmitterFunction", "BatchCreated", "submit_stuck_seconds"),
        ("CompletionFunction", "BatchEnded", "finalize_stuck_seconds"),
    ],
)
def test_a_step_is_given_up_only_once_its_last_event_cannot_arrive(function: str, rule: str, stuck: str) -> None:
    # Given a function throttled for hours: each re-drive publishes one more event for the batch, and AWS may
    # still hand over the last one until it is as old as EventBridge and Lambda keep events, plus one run
    properties = template.load_template()["Resources"][function]["Properties"]
    retry_policy = properties["Events"][rule]["Properties"].get("RetryPolicy", {})
    longest = (
        retry_policy.get("MaximumEventAgeInSeconds", EVENTBRIDGE_DEFAULT_AGE)
        + properties["EventInvokeConfig"].get("MaximumEventAgeInSeconds", LAMBDA_DEFAULT_AGE)
        + properties["Timeout"]
    )
    fields = Settings.model_fields
    # Then the poller's wait after its last re-drive, before it fails the batch, is longer than that
    assert stuck_after(fields[stuck].default, fields["max_redrives"].default) > longest
