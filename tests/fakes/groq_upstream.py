"""A fake Groq batch API: OpenAI's Files + Batches under `/openai/v1`, as `https://api.groq.com/openai/v1` serves
them, with Groq's own key and its one batch endpoint (`/v1/chat/completions`)."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from tests.fakes.openai_upstream import FakeOpenAI

API_KEY = "gsk_fake_groq_key"


class FakeGroq(FakeOpenAI):
    PREFIXES = ("/openai/v1",)

    def authorized(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {API_KEY}"

    def check_lines(self, lines: list[dict[str, Any]]) -> str | None:
        for line in lines:
            if line["url"] != "/v1/chat/completions":
                return f"Groq batches serve /v1/chat/completions only, not {line['url']!r}"
        return None
