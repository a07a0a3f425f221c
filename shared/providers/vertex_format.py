"""Translation between OpenAI chat-completions batch lines and Vertex AI Gemini batch prediction lines. No I/O.

Vertex input lines are `{"request": GenerateContentRequest}` and carry no custom id; output lines are
`{"status", "processed_time", "request", "response"}` in no particular order. Vertex echoes the whole
request in each output line, so every request carries its line's index (0-based, counting the non-blank
lines of our input file) in its labels. When it reads results, the adapter re-reads our input to map each
index back to its custom_id; two identical requests still come back apart.

Google keeps at most 1,000 distinct values per label key over a billing account's life and may drop a key
past that, so the index is not one label's value: it is spelt in decimal across the fixed keys
`batchgw_d0` (units), `batchgw_d1` (tens), ..., each of which only ever takes the values "0" to "9".

JSON schemas (`response_format.json_schema`, tool `parameters`) go to the fields that take JSON Schema as it
is, `generationConfig.responseJsonSchema` and `FunctionDeclaration.parametersJsonSchema`: the older
`responseSchema`/`parameters` are Vertex `Schema` objects (an OpenAPI subset), which refuse `$defs`, `$ref`,
`"type": [...]` and the like that Pydantic and most clients generate.

Fields a GenerateContentRequest has no place for (logprobs, penalties, user, ...) are dropped.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Final

import orjson

from shared.errors import ProviderError
from shared.jsonl import MAX_LINES
from shared.lifecycle import BatchStatus
from shared.providers.base import LineUsage, ProviderStatus, ResultLine
from shared.records import Counts, ErrorEntry

# one label key per decimal digit of the largest line index, units first
LINE_LABEL_KEYS: Final = tuple(f"batchgw_d{place}" for place in range(len(str(MAX_LINES - 1))))
_DIGITS: Final = "0123456789"
_INT32_MAX: Final = 2**31 - 1

_STATES: Final[dict[str, BatchStatus]] = {
    "JOB_STATE_QUEUED": "validating",
    "JOB_STATE_PENDING": "validating",
    "JOB_STATE_RUNNING": "in_progress",
    "JOB_STATE_UPDATING": "in_progress",
    "JOB_STATE_PAUSED": "in_progress",
    "JOB_STATE_SUCCEEDED": "completed",
    "JOB_STATE_PARTIALLY_SUCCEEDED": "completed",
    "JOB_STATE_FAILED": "failed",
    "JOB_STATE_CANCELLING": "cancelling",
    "JOB_STATE_CANCELLED": "cancelled",
    "JOB_STATE_EXPIRED": "expired",
}

_FINISH_REASONS: Final = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}

# google.rpc.Code of a failed job, as a whole-batch error code in OpenAI's style
_RPC_CODES: Final = {
    3: "invalid_request",
    5: "not_found",
    7: "permission_denied",
    8: "quota_exceeded",
    9: "failed_precondition",
    16: "unauthenticated",
}

# Vertex wants a MIME type with every file reference; these are the types Gemini reads
_MIME_TYPES: Final = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "heic": "image/heic",
    "heif": "image/heif",
    "pdf": "application/pdf",
    "txt": "text/plain",
    "mp3": "audio/mp3",
    "wav": "audio/wav",
    "flac": "audio/flac",
    "mp4": "video/mp4",
    "mov": "video/mov",
    "webm": "video/webm",
}

_DATA_URL: Final = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?:;[^,;]*)*?;base64,(?P<data>.*)$", re.DOTALL)
# a per-request status is free text; these say whether it blames the service or the request
_SERVER_ERROR: Final = re.compile(
    r"\b(429|5\d\d)\b|internal|unavailable|deadline|timed? ?out|resource.exhausted|quota|overloaded|try again",
    re.IGNORECASE,
)
_CLIENT_ERROR: Final = re.compile(
    r"\b4\d\d\b|invalid|unsupported|not supported|bad request|not found|permission|too (large|long)|exceed|"
    r"malformed|must be|required|unauthenticated|failed.precondition",
    re.IGNORECASE,
)


# --- request ----------------------------------------------------------------------------------------


def _text_of(content: Any) -> str:
    """The text of an OpenAI message content: a string or the text parts of a list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _mime_of(uri: str, default: str) -> str:
    path = uri.split("?", 1)[0].split("#", 1)[0]
    extension = path.rsplit(".", 1)[-1].lower() if "." in path.rsplit("/", 1)[-1] else ""
    return _MIME_TYPES.get(extension, default)


def _media_part(url: str, default_mime: str) -> dict[str, Any] | None:
    """A data: URL as inline data, a gs:// or http(s) URL as a file reference."""
    match = _DATA_URL.match(url)
    if match:
        return {"inlineData": {"mimeType": match["mime"] or default_mime, "data": match["data"]}}
    if url.startswith(("gs://", "https://", "http://")):
        return {"fileData": {"fileUri": url, "mimeType": _mime_of(url, default_mime)}}
    return None


def _content_part(part: Any) -> dict[str, Any] | None:
    if isinstance(part, str):
        return {"text": part}
    if not isinstance(part, dict):
        return None
    kind = part.get("type")
    if kind == "text" and isinstance(part.get("text"), str):
        return {"text": part["text"]}
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        return _media_part(url, "image/jpeg") if isinstance(url, str) else None
    if kind == "input_audio" and isinstance(part.get("input_audio"), dict):
        audio = part["input_audio"]
        return {"inlineData": {"mimeType": f"audio/{audio.get('format') or 'wav'}", "data": audio.get("data", "")}}
    if kind == "file" and isinstance(part.get("file"), dict):
        data = part["file"].get("file_data")
        return _media_part(data, _mime_of(str(part["file"].get("filename") or ""), "application/pdf")) if data else None
    return None


def _parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    if isinstance(content, list):
        return [p for p in map(_content_part, content) if p is not None]
    return []


def _arguments(raw: Any) -> dict[str, Any]:
    """Tool-call arguments as the JSON object Gemini wants; arguments that are not one are kept as a string."""
    if isinstance(raw, dict):
        return raw
    try:
        parsed = orjson.loads(raw) if isinstance(raw, str | bytes) else None
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        return parsed
    return {} if raw in (None, "") else {"arguments": raw}


def _function_call_parts(tool_calls: Any, names: dict[str, str]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for call in tool_calls if isinstance(tool_calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            continue
        if isinstance(call.get("id"), str):
            names[call["id"]] = function["name"]
        parts.append({"functionCall": {"name": function["name"], "args": _arguments(function.get("arguments"))}})
    return parts


def _function_response(message: Mapping[str, Any], names: dict[str, str]) -> dict[str, Any]:
    name = names.get(str(message.get("tool_call_id")), "") or str(message.get("name") or "")
    text = _text_of(message.get("content"))
    try:
        parsed = orjson.loads(text) if text else None
    except orjson.JSONDecodeError:
        parsed = None
    response = parsed if isinstance(parsed, dict) else {"content": text}
    return {"functionResponse": {"name": name, "response": response}}


def _contents(messages: Iterable[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(contents, system instruction parts) of an OpenAI message list."""
    contents: list[dict[str, Any]] = []
    system: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool_call_id -> function name, for the tool messages that answer them
    for message in messages:
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if role in ("system", "developer"):
            text = _text_of(message.get("content"))
            if text:
                system.append({"text": text})
        elif role == "user":
            contents.append({"role": "user", "parts": _parts(message.get("content"))})
        elif role == "assistant":
            parts = _parts(message.get("content")) + _function_call_parts(message.get("tool_calls"), names)
            contents.append({"role": "model", "parts": parts})
        elif role in ("tool", "function"):
            part = _function_response(message, names)
            last = contents[-1] if contents else None
            # Gemini wants all the answers to one turn's calls in one content
            if last and last["role"] == "user" and last["parts"] and "functionResponse" in last["parts"][-1]:
                last["parts"].append(part)
            else:
                contents.append({"role": "user", "parts": [part]})
    return [c for c in contents if c["parts"]], system


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _generation_config(body: Mapping[str, Any], max_output_tokens: int | None) -> dict[str, Any]:
    config: dict[str, Any] = {}
    limits = (_integer(body.get("max_completion_tokens")), _integer(body.get("max_tokens")), max_output_tokens)
    max_tokens = next((limit for limit in limits if limit is not None), None)
    if max_tokens is not None:
        config["maxOutputTokens"] = max_tokens
    for ours, theirs in (("temperature", "temperature"), ("top_p", "topP")):
        if isinstance(body.get(ours), int | float) and not isinstance(body[ours], bool):
            config[theirs] = body[ours]
    seed = _integer(body.get("seed"))
    if seed is not None:
        # Vertex's seed is an int32; OpenAI's may be larger. Folding keeps one seed giving one answer.
        config["seed"] = seed if -(2**31) <= seed < 2**31 else seed & _INT32_MAX
    stop = body.get("stop")
    if isinstance(stop, str):
        config["stopSequences"] = [stop]
    elif isinstance(stop, list) and any(isinstance(s, str) for s in stop):
        config["stopSequences"] = [s for s in stop if isinstance(s, str)]
    n = _integer(body.get("n"))
    if n is not None and n != 1:
        config["candidateCount"] = n
    response_format = body.get("response_format")
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
    if kind == "json_schema":
        assert isinstance(response_format, dict)
        spec = response_format.get("json_schema")
        if isinstance(spec, dict) and isinstance(spec.get("schema"), dict):
            config["responseJsonSchema"] = spec["schema"]
    return config


def _tools(tools: Any) -> list[dict[str, Any]]:
    declarations: list[dict[str, Any]] = []
    for tool in tools if isinstance(tools, list) else ():
        function = (
            tool.get("function") if isinstance(tool, dict) and tool.get("type", "function") == "function" else None
        )
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            continue
        declaration: dict[str, Any] = {"name": function["name"]}
        if function.get("description") is not None:
            declaration["description"] = function["description"]
        if function.get("parameters") is not None:
            declaration["parametersJsonSchema"] = function["parameters"]
        declarations.append(declaration)
    return [{"functionDeclarations": declarations}] if declarations else []


def _tool_config(choice: Any) -> dict[str, Any] | None:
    modes = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
    if isinstance(choice, str) and choice in modes:
        return {"functionCallingConfig": {"mode": modes[choice]}}
    function = choice.get("function") if isinstance(choice, dict) else None
    if isinstance(function, dict) and isinstance(function.get("name"), str):
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [function["name"]]}}
    return None


def generate_content_request(
    body: Mapping[str, Any], index: int, *, max_output_tokens: int | None = None
) -> dict[str, Any]:
    """A chat-completions body as a GenerateContentRequest, labelled with its line's index; `max_output_tokens`
    caps the output of a request that sets no limit of its own (the bound batchgw's budgets reserve)."""
    contents, system = _contents(body.get("messages") or ())
    request: dict[str, Any] = {"contents": contents}
    if system:
        request["systemInstruction"] = {"parts": system}
    config = _generation_config(body, max_output_tokens)
    if config:
        request["generationConfig"] = config
    tools = _tools(body.get("tools"))
    if tools:
        request["tools"] = tools
        tool_config = _tool_config(body.get("tool_choice"))
        if tool_config:
            request["toolConfig"] = tool_config
    request["labels"] = line_labels(index)
    return request


def input_line(body: Mapping[str, Any], index: int, *, max_output_tokens: int | None = None) -> bytes:
    """One Vertex batch input line, newline included."""
    request = generate_content_request(body, index, max_output_tokens=max_output_tokens)
    return orjson.dumps({"request": request}, option=orjson.OPT_APPEND_NEWLINE)


# --- line labels ------------------------------------------------------------------------------------


def line_labels(index: int) -> dict[str, str]:
    """The labels that tag input line `index`: one decimal digit per key of LINE_LABEL_KEYS."""
    if not 0 <= index < 10 ** len(LINE_LABEL_KEYS):
        raise ValueError(f"line index {index} does not fit in {len(LINE_LABEL_KEYS)} digits")
    return {key: _DIGITS[index // 10**place % 10] for place, key in enumerate(LINE_LABEL_KEYS)}


def line_index(prediction: Mapping[str, Any]) -> int | None:
    """The input line index a prediction line answers, from the labels its request echoes; None if they
    are missing or malformed (a key Google dropped, a value that is not one digit)."""
    request = prediction.get("request")
    labels = request.get("labels") if isinstance(request, dict) else None
    if not isinstance(labels, dict):
        return None
    index = 0
    for place, key in enumerate(LINE_LABEL_KEYS):
        digit = labels.get(key)
        if not isinstance(digit, str) or len(digit) != 1 or digit not in _DIGITS:
            return None
        index += int(digit) * 10**place
    return index


# --- results ----------------------------------------------------------------------------------------


class _MalformedPrediction(ValueError):
    """What is wrong with a prediction's response, in words for the error line."""


def _int(value: Any) -> int:
    """An int64 field, which Google's JSON sends as a string."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return 0


def _as_text(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # not JSON (an integer past 64 bits, say): nothing Vertex's JSON could hold
        return repr(value)


def _shown(value: Any) -> str:
    return _as_text(value)[:80]


def _token_count(metadata: Mapping[str, Any], name: str) -> int:
    """A usageMetadata count (an int32), a JSON number or a string; 0 when absent."""
    value = metadata.get(name)
    if value is None:
        return 0
    count = value if isinstance(value, int) and not isinstance(value, bool) else None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= len(str(_INT32_MAX)):
        count = int(value)
    if count is None or not 0 <= count <= _INT32_MAX:
        raise _MalformedPrediction(f"response.usageMetadata.{name} is not a token count: {_shown(value)}")
    return count


def _timestamp(value: Any) -> int:
    if not isinstance(value, str):
        return 0
    try:
        return int(datetime.fromisoformat(value).timestamp())
    except (ValueError, OverflowError, OSError):
        return 0


def _candidates(candidates: Any) -> list[dict[str, Any]]:
    """A response's candidates, checked down to their parts."""
    if candidates is None:
        return []
    if not isinstance(candidates, list):
        raise _MalformedPrediction(f"response.candidates is not a list: {_shown(candidates)}")
    for position, candidate in enumerate(candidates):
        where = f"response.candidates[{position}]"
        if not isinstance(candidate, dict):
            raise _MalformedPrediction(f"{where} is not an object: {_shown(candidate)}")
        content = candidate.get("content")
        if content is not None and not isinstance(content, dict):
            raise _MalformedPrediction(f"{where}.content is not an object: {_shown(content)}")
        parts = content.get("parts") if content else None
        if parts is not None and not (isinstance(parts, list) and all(isinstance(p, dict) for p in parts)):
            raise _MalformedPrediction(f"{where}.content.parts is not a list of objects: {_shown(parts)}")
    return candidates


def _choice(candidate: Mapping[str, Any], position: int, line_key: str) -> dict[str, Any]:
    parts = (candidate.get("content") or {}).get("parts") or ()
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for part in parts:
        if part.get("thought"):
            continue  # thought summaries are not the answer
        if isinstance(part.get("text"), str):
            texts.append(part["text"])
        call = part.get("functionCall")
        if isinstance(call, dict) and isinstance(call.get("name"), str):
            call_id = call.get("id")
            if not isinstance(call_id, str) or not call_id:
                call_id = f"call_{line_key[:16]}_{position}_{len(tool_calls)}"
            arguments = _as_text(call.get("args") or {})
            tool_calls.append(
                {"id": call_id, "type": "function", "function": {"name": call["name"], "arguments": arguments}}
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None, "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    finish = _FINISH_REASONS.get(str(candidate.get("finishReason")), "stop")
    if tool_calls and finish == "stop":
        finish = "tool_calls"
    index = candidate.get("index")
    return {
        "index": index if isinstance(index, int) and not isinstance(index, bool) else position,
        "message": message,
        "logprobs": None,
        "finish_reason": finish,
    }


def _usage(metadata: Any) -> tuple[dict[str, Any], LineUsage]:
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise _MalformedPrediction(f"response.usageMetadata is not an object: {_shown(metadata)}")
    prompt = _token_count(metadata, "promptTokenCount")
    cached = _token_count(metadata, "cachedContentTokenCount")
    thoughts = _token_count(metadata, "thoughtsTokenCount")
    if cached > prompt:
        raise _MalformedPrediction(f"response.usageMetadata has {cached} cached tokens of {prompt} prompt tokens")
    # Gemini bills thinking as output, and counts it apart from the candidates
    completion = _token_count(metadata, "candidatesTokenCount") + thoughts
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": thoughts},
    }
    line_usage = LineUsage(
        input_tokens=prompt, cached_tokens=cached, output_tokens=completion, reasoning_tokens=thoughts
    )
    return usage, line_usage


def error_status_code(message: str) -> int:
    """400 for a per-request status that blames the request, else 500."""
    if _SERVER_ERROR.search(message):
        return 500
    return 400 if _CLIENT_ERROR.search(message) else 500


def _error_line(custom_id: str, message: str) -> ResultLine:
    status_code = error_status_code(message)
    body = {
        "error": {
            "message": message,
            "type": "invalid_request_error" if status_code == 400 else "server_error",
            "param": None,
            "code": None,
        }
    }
    return ResultLine(custom_id=custom_id, response={"status_code": status_code, "request_id": "", "body": body})


def _malformed_line(custom_id: str, problem: str) -> ResultLine:
    message = f"Vertex AI returned a prediction batchgw cannot read: {problem}."
    return ResultLine(custom_id=custom_id, response=None, error={"code": "provider_error", "message": message})


def result_line(prediction: Mapping[str, Any], custom_id: str, model: str) -> ResultLine:
    """One Vertex prediction line as an OpenAI output line for `custom_id`; `model` if it names none.

    A non-empty `status` is Vertex's error for the request, kept as an HTTP-style error response; a
    response this cannot read becomes a `provider_error` line saying what was wrong. Never raises."""
    status = prediction.get("status")
    if status:
        return _error_line(custom_id, status if isinstance(status, str) else _as_text(status))
    response = prediction.get("response")
    if not isinstance(response, dict):
        return _malformed_line(custom_id, f"it has no status and its response is not an object: {_shown(response)}")
    processed_time = str(prediction.get("processed_time") or "")
    line_key = hashlib.blake2b(f"{custom_id}\0{processed_time}".encode(), digest_size=12).hexdigest()
    try:
        candidates = _candidates(response.get("candidates"))
        usage, line_usage = _usage(response.get("usageMetadata"))
    except _MalformedPrediction as exc:
        return _malformed_line(custom_id, str(exc))
    choices = [_choice(candidate, position, line_key) for position, candidate in enumerate(candidates)]
    if not choices:  # the prompt itself was blocked
        choices = [_choice({"finishReason": "PROHIBITED_CONTENT"}, 0, line_key)]
    response_id = response.get("responseId")
    response_id = response_id if isinstance(response_id, str) else ""
    model_version = response.get("modelVersion")
    body = {
        "id": f"chatcmpl-{response_id or line_key}",
        "object": "chat.completion",
        "created": _timestamp(processed_time) or _timestamp(response.get("createTime")),
        "model": model_version if isinstance(model_version, str) and model_version else model,
        "choices": choices,
        "usage": usage,
        "system_fingerprint": None,
    }
    return ResultLine(
        custom_id=custom_id,
        response={"status_code": 200, "request_id": response_id, "body": body},
        usage=line_usage,
    )


# --- jobs -------------------------------------------------------------------------------------------


def openai_state(state: Any) -> BatchStatus:
    """A Vertex JobState in OpenAI's batch vocabulary."""
    mapped = _STATES.get(str(state))
    if mapped is None:
        raise ProviderError(f"unknown batch prediction job state {state!r}", retryable=True)
    return mapped


def job_counts(job: Mapping[str, Any], total: int | None) -> Counts | None:
    """Request counts from a job's completionStats; `total` is our own line count, when known."""
    stats = job.get("completionStats")
    if not isinstance(stats, dict):
        return None
    succeeded, failed = _int(stats.get("successfulCount")), _int(stats.get("failedCount"))
    incomplete = max(_int(stats.get("incompleteCount")), 0)  # -1 means unknown
    return Counts(total=total or succeeded + failed + incomplete, completed=succeeded, failed=failed)


def job_status(job: Mapping[str, Any], total: int | None = None) -> ProviderStatus:
    """A batchPredictionJob as a ProviderStatus, with its error as a whole-batch error."""
    state = openai_state(job.get("state"))
    error = job.get("error")
    errors: tuple[ErrorEntry, ...] = ()
    if isinstance(error, dict) and (error.get("message") or error.get("code")):
        code = _RPC_CODES.get(_int(error.get("code")), "provider_error")
        errors = (ErrorEntry(code=code, message=str(error.get("message") or "The batch prediction job failed.")),)
    return ProviderStatus(state, job_counts(job, total), errors)
