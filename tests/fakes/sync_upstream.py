"""A fake OpenAI-compatible synchronous endpoint (a vLLM or DeepSeek server): `/v1/chat/completions` and
`/v1/embeddings`, one answer per call, no batch API.

It records what a test of batchgw's sync deployments checks: the most calls it ever had under way at once
(`peak`), how often each request was answered, and the tokens it billed. Requests are told apart by their
prompt. Misbehaviour is chosen per prompt from a stable hash, so runs repeat: a `rate_limit_share` of
prompts gets a 429 with `Retry-After` on its first call, a `hang_share` hangs on its first call until the
client gives up, a `refuse_share` is always refused with a 400; every other call is answered after `delay`.
A call is under way until it is answered or its client hangs up.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

API_KEY = "sk-fake-sync-endpoint"
COMPLETION_TOKENS = 7


def _fraction(prompt: str) -> float:
    return int.from_bytes(hashlib.blake2b(prompt.encode(), digest_size=8).digest()) / 2**64


def _prompt(body: dict[str, Any]) -> str:
    messages = body.get("messages")
    if isinstance(messages, list) and messages:
        return str(messages[-1].get("content"))
    return str(body.get("input"))


class FakeSyncEndpoint:
    def __init__(
        self,
        *,
        rate_limit_share: float = 0.0,
        hang_share: float = 0.0,
        refuse_share: float = 0.0,
        retry_after: int = 1,
        hang_seconds: float = 10.0,
        delay: float = 0.0,
    ) -> None:
        self.rate_limit_share = rate_limit_share
        self.hang_share = hang_share
        self.refuse_share = refuse_share
        self.retry_after = retry_after
        self.hang_seconds = hang_seconds
        self.delay = delay
        self.in_flight = 0
        self.peak = 0
        self.calls: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self.rate_limited: dict[str, float] = {}  # prompt -> when its 429 was sent
        self.retry_gaps: list[float] = []  # seconds from each 429 to the next call of its prompt
        self.hung: set[str] = set()
        self.refused: set[str] = set()
        self.models: set[str] = set()
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.app = FastAPI()
        self.app.post("/v1/chat/completions")(self._chat)
        self.app.post("/v1/embeddings")(self._embeddings)

    def fate(self, prompt: str) -> str | None:
        """How this prompt's calls misbehave: `rate_limit` or `hang` on its first call, `refuse` on every one."""
        roll = _fraction(prompt)
        for fate, share in (("rate_limit", self.rate_limit_share), ("hang", self.hang_share)):
            if roll < share:
                return fate
            roll -= share
        return "refuse" if roll < self.refuse_share else None

    async def _chat(self, request: Request) -> JSONResponse:
        return await self._call(request, embeddings=False)

    async def _embeddings(self, request: Request) -> JSONResponse:
        return await self._call(request, embeddings=True)

    async def _call(self, request: Request, *, embeddings: bool) -> JSONResponse:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            return await self._answer(request, embeddings=embeddings)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: Request, *, embeddings: bool) -> JSONResponse:
        if request.headers.get("authorization") != f"Bearer {API_KEY}":
            return JSONResponse({"error": {"message": "bad key", "type": "invalid_request_error"}}, status_code=401)
        body = await request.json()
        prompt = _prompt(body)
        first = self.calls[prompt] == 0
        self.calls[prompt] += 1
        if prompt in self.rate_limited and self.calls[prompt] == 2:
            self.retry_gaps.append(time.monotonic() - self.rate_limited[prompt])
        fate = self.fate(prompt)
        if fate == "rate_limit" and first:
            self.rate_limited[prompt] = time.monotonic()
            error = {"error": {"message": "Rate limit reached", "type": "rate_limit_error"}}
            return JSONResponse(error, status_code=429, headers={"retry-after": str(self.retry_after)})
        if fate == "hang" and first:
            self.hung.add(prompt)
            until = time.monotonic() + self.hang_seconds
            while time.monotonic() < until and not await request.is_disconnected():
                await asyncio.sleep(0.005)
        if fate == "refuse":
            self.refused.add(prompt)
            error = {"error": {"message": "This request is not valid", "type": "invalid_request_error"}}
            return JSONResponse(error, status_code=400)
        if await request.is_disconnected():
            return JSONResponse({}, status_code=499)
        if self.delay:
            await asyncio.sleep(self.delay)
        self.models.add(str(body.get("model")))
        self.answered[prompt] += 1
        prompt_tokens = len(prompt.split()) + 3
        self.prompt_tokens += prompt_tokens
        request_id = f"req-{hashlib.blake2b(prompt.encode(), digest_size=6).hexdigest()}"
        if embeddings:
            answer: dict[str, Any] = {
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}],
                "model": body.get("model"),
                "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
            }
            return JSONResponse(answer, headers={"x-request-id": request_id})
        self.completion_tokens += COMPLETION_TOKENS
        answer = {
            "id": f"chatcmpl-{request_id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": f"answer to {prompt}"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": COMPLETION_TOKENS,
                "total_tokens": prompt_tokens + COMPLETION_TOKENS,
            },
        }
        return JSONResponse(answer, headers={"x-request-id": request_id})
