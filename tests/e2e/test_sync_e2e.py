"""A sync deployment through `batchgw dev` with the official openai SDK: the dev stack runs the sync worker
through its FIFO queue, as many delivery workers as the template's MaximumConcurrency allows, against a
fake endpoint without a batch API that answers 429 now and then."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import orjson
import pytest

from tests.e2e.conftest import DEV_KEY, dev_stack, wait_terminal, write_batch
from tests.fakes.servers import serve_in_thread
from tests.fakes.sync_upstream import API_KEY, COMPLETION_TOKENS, FakeSyncEndpoint

pytestmark = pytest.mark.e2e

MAX_CONCURRENCY = 3


@pytest.fixture(scope="module")
def endpoint() -> Iterator[tuple[FakeSyncEndpoint, str]]:
    fake = FakeSyncEndpoint(rate_limit_share=0.05, delay=0.02)
    with serve_in_thread(fake.app) as url:
        yield fake, url


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, endpoint: tuple[FakeSyncEndpoint, str]) -> Iterator[openai.OpenAI]:
    _, url = endpoint
    routing = f"""
models:
  - {{name: deepseek-chat, provider: openai, mode: sync, api_base: "{url}/v1", api_key: {API_KEY},
      max_concurrency: {MAX_CONCURRENCY}, pricing: {{input_per_mtok: 0.27, output_per_mtok: 1.1}}}}
"""
    with (
        dev_stack(tmp_path_factory.mktemp("dev-sync"), routing) as base_url,
        openai.OpenAI(base_url=base_url, api_key=DEV_KEY) as sdk,
    ):
        yield sdk


def test_sync_batch_from_the_openai_sdk_completes_within_the_cap_at_standard_prices(
    client: openai.OpenAI, endpoint: tuple[FakeSyncEndpoint, str], tmp_path: Path
) -> None:
    fake, _ = endpoint
    path = write_batch(tmp_path / "in.jsonl", 150, "deepseek-chat")
    file = client.files.create(file=path, purpose="batch")
    created = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    done = wait_terminal(client, created.id, timeout=120)

    assert done.status == "completed" and done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (150, 150, 0)
    content = client.files.content(done.output_file_id or "").content
    output = {line["custom_id"]: line for line in map(orjson.loads, content.splitlines())}
    assert sorted(output) == sorted(f"req-{i}" for i in range(150))
    assert all(line["response"]["body"]["usage"]["completion_tokens"] == COMPLETION_TOKENS for line in output.values())
    assert len(fake.rate_limited) > 0 and set(fake.answered.values()) == {1}
    assert 2 <= fake.peak <= MAX_CONCURRENCY
    assert done.usage is not None
    assert done.usage.input_tokens == fake.prompt_tokens and done.usage.output_tokens == fake.completion_tokens
    expected = (fake.prompt_tokens * 0.27 + fake.completion_tokens * 1.1) / 1_000_000
    assert (done.model_extra or {})["cost"]["value"] == pytest.approx(expected, rel=1e-9)
