"""OpenAI request bodies as Mistral's batch lines take them, and Mistral's answers in OpenAI's shape.

Mistral's chat and embeddings APIs are OpenAI's in all but a few names, and they refuse a field they do
not know (422 `extra_forbidden`) instead of ignoring it. So the fields OpenAI's SDK writes by default
are renamed (`max_completion_tokens`, `seed`, `dimensions`), the ones that only label or store a request
are dropped (`user`, `store`, a message's `name`), and a request asking for what Mistral cannot do
(`logprobs`, audio, file parts, non-function tools) is refused here, alone, before anything is sent.

Answers: Mistral's error bodies are `{"object": "error", "message", "type", "param", "code"}`, not
OpenAI's `{"error": {...}}`; its finish reason `model_length` is OpenAI's `length`; a reasoning model's
message content is a list of chunks where OpenAI has a string.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from shared.providers.base import TranslationError, own_output_limit

# OpenAI chat fields Mistral takes under the same name, with the same meaning
_CHAT_SAME: Final = frozenset(
    {
        "temperature",
        "top_p",
        "stop",
        "n",
        "presence_penalty",
        "frequency_penalty",
        "response_format",
        "tool_choice",
        "parallel_tool_calls",
        "prediction",
        "reasoning_effort",
        "metadata",
        "prompt_cache_key",
    }
)
# fields that only label, store or stream a request: Mistral has none of them, and the answer is the same
_DROPPED: Final = frozenset({"model", "user", "store", "service_tier", "safety_identifier", "stream_options"})
_EMBEDDING_SAME: Final = frozenset({"input", "encoding_format"})
_MESSAGE_KEYS: Final = {
    "system": frozenset({"role", "content"}),
    "user": frozenset({"role", "content"}),
    "assistant": frozenset({"role", "content", "tool_calls", "prefix"}),
    "tool": frozenset({"role", "content", "tool_call_id", "name"}),
}
_CONTENT_PARTS: Final = frozenset({"text", "image_url"})
_FINISH_REASONS: Final = {"model_length": "length"}


def to_mistral(body: dict[str, Any]) -> dict[str, Any]:
    """A batch line's `body` for Mistral: a chat request when it has messages, else an embeddings one.

    Raises TranslationError for a request Mistral cannot take. The model is the job's, so it is left out.
    """
    return _chat(body) if "messages" in body else _embeddings(body)


def _chat(body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in body.items():
        if value is None or key in _DROPPED:
            continue
        if key in _CHAT_SAME:
            out[key] = value
        elif key == "messages":
            out["messages"] = [_message(m) for m in _list(value, "messages")]
        elif key == "tools":
            out["tools"] = [_tool(t) for t in _list(value, "tools")]
        elif key in ("max_tokens", "max_completion_tokens"):
            out["max_tokens"] = own_output_limit(body)  # OpenAI's newer name wins when a request sets both
        elif key == "seed":
            out["random_seed"] = value
        elif key == "stream":
            if value:
                raise TranslationError("a batch request cannot be streamed")
        else:
            raise TranslationError(f"Mistral's chat API has no `{key}`")
    return out


def _message(message: Any) -> dict[str, Any]:
    if not isinstance(message, dict):
        raise TranslationError("every message must be an object")
    role = "system" if message.get("role") == "developer" else message.get("role")
    allowed = _MESSAGE_KEYS.get(role) if isinstance(role, str) else None
    if allowed is None:
        raise TranslationError(f"Mistral's chat API has no message role {role!r}")
    out: dict[str, Any] = {"role": role}
    for key, value in message.items():
        if key == "role" or value is None or (key == "name" and role != "tool"):
            continue
        if key not in allowed:
            raise TranslationError(f"Mistral's chat API has no `{key}` on {role} messages")
        out[key] = _content(value) if key == "content" else value
    return out


def _content(content: Any) -> Any:
    if isinstance(content, list):
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in _CONTENT_PARTS:
                raise TranslationError(f"Mistral's chat API takes text and image_url content, not {kind!r}")
    return content


def _tool(tool: Any) -> Any:
    if not isinstance(tool, dict) or tool.get("type") != "function":
        kind = tool.get("type") if isinstance(tool, dict) else tool
        raise TranslationError(f"Mistral's chat API takes function tools only, not {kind!r}")
    return tool


def _embeddings(body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in body.items():
        if value is None or key in _DROPPED:
            continue
        if key == "input":
            if not isinstance(value, str) and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise TranslationError("Mistral embeds text: `input` must be a string or a list of strings")
            out["input"] = value
        elif key in _EMBEDDING_SAME:
            out[key] = value
        elif key == "dimensions":
            out["output_dimension"] = value
        else:
            raise TranslationError(f"Mistral's embeddings API has no `{key}`")
    if "input" not in out:
        raise TranslationError("a request needs `messages` (chat) or `input` (embeddings)")
    return out


def _list(value: Any, name: str) -> list[Any]:
    if not isinstance(value, list):
        raise TranslationError(f"`{name}` must be a list")
    return value


# --- answers ----------------------------------------------------------------------------------------


def openai_response(response: dict[str, Any]) -> dict[str, Any]:
    """A result line's `response` (`{status_code, body}`) with its body in OpenAI's shape."""
    body = response.get("body")
    if not isinstance(body, dict):
        return response
    status = response.get("status_code")
    if isinstance(status, int) and status >= 400:
        body = _openai_error(body)
    elif "choices" in body:
        body = {**body, "choices": [_choice(c) for c in body["choices"]]}
    request_id = response.get("request_id") or body.get("id")
    return {**response, "body": body, **({"request_id": request_id} if isinstance(request_id, str) else {})}


def _openai_error(body: dict[str, Any]) -> dict[str, Any]:
    if isinstance(body.get("error"), dict):
        return body
    message = body.get("message", body.get("detail"))
    return {
        "error": {
            "message": message if isinstance(message, str) else orjson.dumps(message).decode(),
            "type": body.get("type") or "invalid_request_error",
            "param": body.get("param"),
            "code": body.get("code"),
        }
    }


def _choice(choice: dict[str, Any]) -> dict[str, Any]:
    reason = choice.get("finish_reason")
    out = {**choice, "finish_reason": _FINISH_REASONS.get(reason, reason) if isinstance(reason, str) else reason}
    message = choice.get("message")
    if isinstance(message, dict) and isinstance(message.get("content"), list):
        # a reasoning model's chunks: OpenAI's message has its text only
        text = "".join(c["text"] for c in message["content"] if c.get("type") == "text")
        out["message"] = {**message, "content": text}
    return out
