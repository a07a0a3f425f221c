"""Translation between OpenAI chat-completions lines and Bedrock batch inference records.

Bedrock records are `{recordId, modelInput}`; results come back as `{recordId, modelInput, modelOutput}`
or `{recordId, modelInput, error: {errorCode, errorMessage}}`. Anthropic models take their native
Messages body (with `anthropic_version`), translated by shared.providers.anthropic_format; every other
model takes a Converse request (the job's `modelInvocationType: Converse`). Record ids are the line's
index, so results map back to custom_ids through our own input file.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any

from shared.errors import ProviderError
from shared.providers.base import LineUsage

ANTHROPIC_VERSION = "bedrock-2023-05-31"
_IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/gif": "gif", "image/webp": "webp"}
_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}


def is_anthropic(model_id: str) -> bool:
    """Whether a Bedrock model id (or inference profile) is an Anthropic model, which takes its native body."""
    return "anthropic." in model_id


def record_id(index: int) -> str:
    return f"r{index:011d}"


def index_of(record: str) -> int | None:
    return int(record[1:]) if record.startswith("r") and record[1:].isdigit() else None


def _text_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content or []:
        if part.get("type") == "text":
            blocks.append({"text": part.get("text", "")})
        elif part.get("type") == "image_url":
            blocks.append(_image_block(str((part.get("image_url") or {}).get("url", ""))))
    return blocks


def _image_block(url: str) -> dict[str, Any]:
    header, _, data = url.partition(",")
    media_type = header.removeprefix("data:").removesuffix(";base64")
    if not url.startswith("data:") or media_type not in _IMAGE_FORMATS:
        raise ProviderError(
            "Bedrock batch inference takes images only as base64 data URLs (png, jpeg, gif, webp)",
            retryable=False,
            code="unsupported_content",
        )
    try:
        base64.b64decode(data, validate=True)
    except binascii.Error as exc:
        raise ProviderError("an image data URL is not valid base64", retryable=False, code="invalid_image") from exc
    # Converse takes the image bytes base64-encoded in JSON, as the data URL already holds them
    return {"image": {"format": _IMAGE_FORMATS[media_type], "source": {"bytes": data}}}


def to_converse(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat-completions body as a Bedrock Converse request."""
    if body.get("tools") or any(m.get("role") == "tool" or m.get("tool_calls") for m in body.get("messages", [])):
        raise ProviderError(
            "Bedrock batch inference does not take tool calls with the Converse format",
            retryable=False,
            code="unsupported_tools",
        )
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for message in body.get("messages", []):
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_text_blocks(message.get("content")))
        elif role in ("user", "assistant"):
            messages.append({"role": role, "content": _text_blocks(message.get("content"))})
    config: dict[str, Any] = {}
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        config["maxTokens"] = max_tokens
    for ours, theirs in (("temperature", "temperature"), ("top_p", "topP")):
        if body.get(ours) is not None:
            config[theirs] = body[ours]
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    request: dict[str, Any] = {"messages": messages}
    if system:
        request["system"] = system
    if config:
        request["inferenceConfig"] = config
    return request


def from_converse(output: dict[str, Any], *, model: str, completion_id: str) -> tuple[dict[str, Any], LineUsage]:
    """A Converse response as an OpenAI chat.completion body, with its usage."""
    message = (output.get("output") or {}).get("message") or {}
    text = "".join(str(block.get("text", "")) for block in message.get("content", []) if "text" in block)
    usage = output.get("usage") or {}
    cache_read = int(usage.get("cacheReadInputTokens") or 0)
    cache_write = int(usage.get("cacheWriteInputTokens") or 0)
    prompt = int(usage.get("inputTokens") or 0) + cache_read + cache_write
    completion = int(usage.get("outputTokens") or 0)
    body = {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "finish_reason": _STOP_REASONS.get(str(output.get("stopReason")), "stop"),
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cache_read},
        },
    }
    return body, LineUsage(
        input_tokens=prompt, cached_tokens=cache_read, cache_write_tokens=cache_write, output_tokens=completion
    )


def error_response(error: dict[str, Any], request_id: str) -> dict[str, Any]:
    """A record's `error` as an OpenAI error response."""
    code = error.get("errorCode")
    status = code if isinstance(code, int) and 400 <= code < 600 else 500
    kind = "invalid_request_error" if status < 500 else "server_error"
    message = str(error.get("errorMessage") or "Bedrock could not process this record")
    return {
        "status_code": status,
        "request_id": request_id,
        "body": {"error": {"message": message, "type": kind, "param": None, "code": None}},
    }
