"""Polling by listing: a deployment's running batches are read from its list pages, not retrieved one by one."""

from __future__ import annotations

from tests.integration.conftest import Stack, batch_lines, record, started


def retrieves(stack: Stack) -> int:
    return sum(n for call, n in stack.upstream.calls.items() if call.startswith("GET /v1/batches/"))


def test_thirty_running_batches_are_polled_from_list_pages_without_retrieving_each(stack: Stack) -> None:
    batch_ids = [started(stack, batch_lines(1, model="upstream-gpt-4o-mini", prefix=f"b{i}")) for i in range(30)]
    stack.deliver("SubmitterFunction")
    assert all(record(stack, b).status == "in_progress" for b in batch_ids)
    before_lists, before_retrieves = stack.upstream.calls["GET /v1/batches"], retrieves(stack)

    stack.poll()

    # one page holds them all (100 a page): one list call, no retrieve
    assert stack.upstream.calls["GET /v1/batches"] - before_lists == 1
    assert retrieves(stack) == before_retrieves
    stack.run_until(lambda: all(record(stack, b).status == "completed" for b in batch_ids))
