"""Translation between OpenAI chat-completions lines and Bedrock batch inference records. Pure: no I/O.

Bedrock records are `{recordId, modelInput}`; results come back as `{recordId, modelInput, modelOutput}`
or `{recordId, modelInput, error: {errorCode, errorMessage}}`. Record ids are the line's index, so results
map back to custom_ids through our own input file.

Anthropic models take their native Messages body with `anthropic_version` and without `model` (the job
names it), translated by shared.providers.anthropic_format; Claude on Bedrock takes images only as base64
sources, so an image URL is refused rather than sent. Every other model takes a Converse request (the
job's `modelInvocationType: Converse`): text and base64 images, consecutive turns of one role merged, as
Converse wants roles to alternate. Converse batches fail tool calls, so requests with tools are refused,
as is any content Converse has no place for (audio, files) and what it cannot answer (`n` > 1, `logprobs:
true`): dropping it would silently change what is asked. A request Bedrock cannot take raises
TranslationError, which fails that request alone.

An output record not shaped as Bedrock documents it (its usage above all, which is billed) raises
MalformedOutput (a ValueError) saying what is wrong.
"""

from __future__ import annotations

import base64
import binascii
import re
import reprlib
import time
from collections.abc import Mapping
from typing import Any, Final

from shared.jsonl import MAX_LINE_BYTES
from shared.providers import anthropic_format
from shared.providers.base import LineUsage, TranslationError, own_output_limit, refuse_choices_and_logprobs
from shared.providers.http import MAX_RESULT_LINE_BYTES
from shared.results import checked_usage

JSONObject = dict[str, Any]

ANTHROPIC_VERSION: Final = "bedrock-2023-05-31"
# an output record repeats its request as modelInput: it may be as long as an input line and its answer
MAX_RECORD_BYTES: Final = MAX_LINE_BYTES + MAX_RESULT_LINE_BYTES
IMAGES_AS_DATA_URLS: Final = "Bedrock takes images only as base64 data URLs; fetch the image and send it as a data: URL"
_IMAGE_FORMATS: Final = {"image/png": "png", "image/jpeg": "jpeg", "image/gif": "gif", "image/webp": "webp"}
_DATA_URL: Final = re.compile(r"data:([\w.+-]+/[\w.+-]+);base64,(.*)", re.DOTALL)
# record ids are 11 alphanumeric characters, the form Bedrock's docs show (and give records without one);
# ids of 12, as batchgw wrote before, are still read
_RECORD_ID: Final = re.compile(r"r([0-9]{10,11})")
_RECORD_ID_IN_LINE: Final = re.compile(rb'"recordId"\s*:\s*"(r[0-9]{10,11})"')
_NO_TOOLS: Final = "Bedrock batch inference does not take tools or tool calls with Converse models"
_STOP_REASONS: Final = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
_TOKEN_COUNTS: Final = ("inputTokens", "outputTokens", "cacheReadInputTokens", "cacheWriteInputTokens")
_REQUIRED_TOKEN_COUNTS: Final = frozenset({"inputTokens", "outputTokens"})


class MalformedOutput(ValueError):
    """An output record not shaped as Bedrock documents it; the text says what is wrong."""


def is_anthropic(model_id: str) -> bool:
    """Whether a Bedrock model id (or inference profile) is an Anthropic model, which takes its native body."""
    return "anthropic." in model_id


def record_id(index: int) -> str:
    return f"r{index:010d}"


def index_of(record: str) -> int | None:
    found = _RECORD_ID.fullmatch(record)
    return int(found.group(1)) if found else None


def index_in_line(prefix: bytes) -> int | None:
    """The index a (possibly cut-off) output record names, if its start shows its recordId."""
    found = _RECORD_ID_IN_LINE.search(prefix)
    return index_of(found.group(1).decode()) if found else None


# --- requests: Claude's native body -----------------------------------------------------------------


def to_claude(body: Mapping[str, Any], model: str, *, max_tokens: int) -> JSONObject:
    """An OpenAI chat-completions body as the Messages body Claude on Bedrock takes in a batch record;
    `max_tokens` when the request sets no limit (the bound batchgw's budgets reserve)."""
    params = anthropic_format.to_params(body, model, max_tokens=max_tokens)
    del params["model"]  # the job names the model; Bedrock refuses it in the body
    for message in params["messages"]:
        content = message["content"]
        if not isinstance(content, list):
            continue
        if any(block.get("type") == "image" and block["source"].get("type") != "base64" for block in content):
            raise TranslationError(IMAGES_AS_DATA_URLS)
    return {"anthropic_version": ANTHROPIC_VERSION, **params}


# --- requests: Converse -----------------------------------------------------------------------------


def to_converse(body: Mapping[str, Any], *, max_tokens: int) -> JSONObject:
    """An OpenAI chat-completions body as a Bedrock Converse request (without `modelId`: the job names it);
    `max_tokens` when the request sets no limit (the bound batchgw's budgets reserve; Converse's default is the
    model's maximum)."""
    refuse_choices_and_logprobs(body, "Bedrock's Converse API")
    if body.get("tools") or body.get("functions"):
        raise TranslationError(_NO_TOOLS)
    response_format = body.get("response_format") or {}
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "json_schema":
        raise TranslationError("Bedrock batch inference does not take a json_schema response_format with Converse")
    system, messages = _conversation(body.get("messages"))
    if kind == "json_object":
        system.append({"text": anthropic_format.JSON_OBJECT_INSTRUCTION})
    request: JSONObject = {"messages": messages}
    if system:
        request["system"] = system
    request["inferenceConfig"] = _inference_config(body, max_tokens)
    return request


def _conversation(raw: Any) -> tuple[list[JSONObject], list[JSONObject]]:
    """(system blocks, alternating user/assistant messages starting with a user one) of OpenAI `messages`."""
    if not isinstance(raw, list):
        raise TranslationError("messages must be a list")
    system: list[JSONObject] = []
    messages: list[JSONObject] = []
    for message in raw:
        role = message.get("role") if isinstance(message, dict) else None
        match role:
            case "system" | "developer":
                system.extend({"text": text} for text in _texts(message.get("content"), role))
            case "user" | "assistant":
                if message.get("tool_calls") or message.get("function_call"):
                    raise TranslationError(_NO_TOOLS)
                blocks = _content_blocks(message.get("content"), role)
                if messages and messages[-1]["role"] == role:
                    messages[-1]["content"].extend(blocks)
                else:
                    messages.append({"role": role, "content": blocks})
            case "tool" | "function":
                raise TranslationError(_NO_TOOLS)
            case _:
                raise TranslationError(f"message role {role!r} is not supported")
    if not messages or messages[0]["role"] != "user":
        raise TranslationError("Converse conversations must start with a user message")
    if any(not message["content"] for message in messages):
        raise TranslationError("Converse refuses a message with no content")
    return system, messages


def _texts(content: Any, role: str) -> list[str]:
    """The non-blank texts of string content or of a list of text parts (Converse refuses blank text)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [content] if content.strip() else []
    if not isinstance(content, list):
        raise TranslationError(f"{role} message content must be a string or a list of content parts")
    texts: list[str] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind != "text":
            raise TranslationError(f"content part type {kind!r} is not supported in a {role} message")
        text = part.get("text")
        if not isinstance(text, str):
            raise TranslationError("a text content part has no text")
        if text.strip():
            texts.append(text)
    return texts


def _content_blocks(content: Any, role: str) -> list[JSONObject]:
    if not isinstance(content, list):
        return [{"text": text} for text in _texts(content, role)]
    blocks: list[JSONObject] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "image_url":
            image = part.get("image_url")
            blocks.append(_image_block(str((image.get("url") if isinstance(image, dict) else image) or "")))
        elif kind == "text":
            blocks.extend({"text": text} for text in _texts([part], role))
        else:
            raise TranslationError(f"content part type {kind!r} is not supported by Bedrock's Converse format")
    return blocks


def _image_block(url: str) -> JSONObject:
    if url.startswith(("http://", "https://")):
        raise TranslationError(IMAGES_AS_DATA_URLS)
    found = _DATA_URL.fullmatch(url)
    if found is None or found.group(1) not in _IMAGE_FORMATS:
        raise TranslationError(f"image_url must be a base64 data URL of type {', '.join(_IMAGE_FORMATS)}")
    data = found.group(2)
    try:
        decoded = base64.b64decode(data, validate=True)
    except binascii.Error:
        raise TranslationError("an image data URL is not valid base64") from None
    if not decoded:
        raise TranslationError("an image data URL holds no data")
    # Converse's image bytes are a blob, which its JSON body (and so a batch record) carries as base64 text:
    # the data URL's payload as it is
    return {"image": {"format": _IMAGE_FORMATS[found.group(1)], "source": {"bytes": data}}}


def _inference_config(body: Mapping[str, Any], default_max_tokens: int) -> JSONObject:
    config: JSONObject = {"maxTokens": own_output_limit(body) or default_max_tokens}
    # Converse's temperature and topP both range 0-1 (OpenAI's temperature 0-2)
    for ours, theirs in (("temperature", "temperature"), ("top_p", "topP")):
        value = body.get(ours)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TranslationError(f"{ours} must be a number")
        config[theirs] = min(max(float(value), 0.0), 1.0)
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    sequences = [s for s in stops if isinstance(s, str) and s]
    if sequences:
        config["stopSequences"] = sequences
    return config


# --- results ----------------------------------------------------------------------------------------


def from_converse(output: Any, *, model: str, completion_id: str) -> tuple[JSONObject, LineUsage]:
    """A Converse response as an OpenAI chat.completion body, with its usage; MalformedOutput if it is none."""
    content, usage = _checked_converse(output)
    text = "".join(block["text"] for block in content if "text" in block)
    cache_read = usage.get("cacheReadInputTokens") or 0
    cache_write = usage.get("cacheWriteInputTokens") or 0
    prompt = usage["inputTokens"] + cache_read + cache_write
    completion = usage["outputTokens"]
    body = {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
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


def _checked_converse(output: Any) -> tuple[list[JSONObject], JSONObject]:
    """The content blocks and usage of a ConverseResponse, checked as from_converse reads them."""
    if not isinstance(output, dict):
        raise MalformedOutput(f"its modelOutput is {reprlib.repr(output)}, not an object")
    converse_output = output.get("output")
    message = converse_output.get("message") if isinstance(converse_output, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list):
        raise MalformedOutput(f"its output is {reprlib.repr(converse_output)}, not a message with content blocks")
    for index, block in enumerate(content):
        if not isinstance(block, dict):
            raise MalformedOutput(f"its content block {index} is {reprlib.repr(block)}, not an object")
        if "text" in block and not isinstance(block["text"], str):
            raise MalformedOutput(f"its content block {index} has text {reprlib.repr(block['text'])}, not a string")
    usage = checked_usage(output.get("usage"), _TOKEN_COUNTS, _REQUIRED_TOKEN_COUNTS, MalformedOutput)
    return content, usage


def error_response(error: Any, request_id: str) -> JSONObject:
    """A record's `error` as an OpenAI error response; MalformedOutput if it is not an object."""
    if not isinstance(error, dict):
        raise MalformedOutput(f"its error is {reprlib.repr(error)}, not an object")
    code = error.get("errorCode")
    status = code if isinstance(code, int) and not isinstance(code, bool) and 400 <= code < 600 else 500
    kind = "invalid_request_error" if status < 500 else "server_error"
    message = error.get("errorMessage")
    return {
        "status_code": status,
        "request_id": request_id,
        "body": {
            "error": {
                "message": message if isinstance(message, str) and message else "Bedrock could not process this record",
                "type": kind,
                "param": None,
                "code": None,
            }
        },
    }
