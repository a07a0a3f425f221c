"""OpenAI chat-completions request bodies as Vertex AI Gemini batch input lines, and the labels that tag them. No I/O.

Vertex input lines are `{"request": GenerateContentRequest}` and carry no custom id; output lines are
`{"status", "processed_time", "request", "response"}` in no particular order. Vertex echoes the whole
request in each output line, so every request carries its line's index (0-based, counting the non-blank
lines of our input file) in its labels. When it reads results, the adapter re-reads our input to map each
index back to its custom_id; two identical requests still come back apart. (shared/providers/vertex_results.py
reads the output lines themselves.)

Google keeps at most 1,000 distinct values per label key over a billing account's life and may drop a key
past that, so the index is not one label's value: it is spelt in decimal across the fixed keys
`batchgw_d0` (units), `batchgw_d1` (tens), ..., each of which only ever takes the values "0" to "9".

JSON schemas (`response_format.json_schema`, tool `parameters`) go to the fields that take JSON Schema as it
is, `generationConfig.responseJsonSchema` and `FunctionDeclaration.parametersJsonSchema`: the older
`responseSchema`/`parameters` are Vertex `Schema` objects (an OpenAPI subset), which refuse `$defs`, `$ref`,
`"type": [...]` and the like that Pydantic and most clients generate.

Content parts Gemini cannot be given (a file by `file_id`, media that is not a base64 data: URL, a gs:// or
an http(s) URL, part types it has no place for) and tools other than named functions raise TranslationError,
which refuses the line before the batch is sent: dropping them would silently change what is asked. Request
fields a GenerateContentRequest has no place for (`user`, `service_tier`, ...) are dropped.

`reasoning_effort` bounds Gemini's thinking, which is billed as output: Gemini 2.5 thinks by default as much as
it likes, so dropping it made `none` think and bill anyway. Gemini 2.5 takes a token budget (the budgets
Google's own OpenAI-compatible endpoint maps the efforts to; 0 turns thinking off, which 2.5 Pro refuses for
its line), Gemini 3 and later a level (they cannot stop thinking: `none` is their least, `minimal`; a level a
model does not take is refused by Vertex for that line). Gemini 2.0 and 1.5 do not think: `none` is sent as
nothing, more is refused, as OpenAI refuses it for a model that does not reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

import orjson

from shared.jsonl import MAX_LINES
from shared.providers.base import TranslationError, named_function, own_output_limit, unmatched_tool_choice

# one label key per decimal digit of the largest line index, units first
LINE_LABEL_KEYS: Final = tuple(f"batchgw_d{place}" for place in range(len(str(MAX_LINES - 1))))
_DIGITS: Final = "0123456789"
# a line label as the start of a prediction line shows it, before the line can be parsed
_LABELS_IN_LINE: Final = tuple(re.compile(rb'"%s"\s*:\s*"([0-9])"' % key.encode()) for key in LINE_LABEL_KEYS)
INT32_MAX: Final = 2**31 - 1

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

# OpenAI's number fields and GenerationConfig's
_NUMBERS: Final = (
    ("temperature", "temperature"),
    ("top_p", "topP"),
    ("presence_penalty", "presencePenalty"),
    ("frequency_penalty", "frequencyPenalty"),
)
# OpenAI's reasoning efforts as Gemini 2.5's thinking budgets and Gemini 3's thinking levels
_THINKING_BUDGETS: Final = {"none": 0, "minimal": 1024, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 24576}
_THINKING_LEVELS: Final = {
    "none": "MINIMAL",
    "minimal": "MINIMAL",
    "low": "LOW",
    "medium": "MEDIUM",
    "high": "HIGH",
    "xhigh": "XHIGH",
}
_BUDGETED_MODEL: Final = re.compile(r"gemini-2\.5")
_UNTHINKING_MODEL: Final = re.compile(r"gemini-(1\.|2\.0)")
_DATA_URL: Final = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?:;[^,;]*)*?;base64,(?P<data>.*)$", re.DOTALL)


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


def _media_part(url: Any, default_mime: str, what: str) -> dict[str, Any]:
    """A data: URL as inline data, a gs:// or http(s) URL as a file reference; TranslationError for anything else."""
    if isinstance(url, str):
        match = _DATA_URL.match(url)
        if match:
            return {"inlineData": {"mimeType": match["mime"] or default_mime, "data": match["data"]}}
        if url.startswith(("gs://", "https://", "http://")):
            return {"fileData": {"fileUri": url, "mimeType": _mime_of(url, default_mime)}}
    raise TranslationError(f"{what} must be a base64 data: URL, a gs:// URL or an http(s) URL")


def _content_part(part: Any, role: str) -> dict[str, Any]:
    if isinstance(part, str):
        return {"text": part}
    kind = part.get("type") if isinstance(part, dict) else None
    match kind:
        case "text":
            if not isinstance(part.get("text"), str):
                raise TranslationError("a text content part has no text")
            return {"text": part["text"]}
        case "refusal" if role == "assistant" and isinstance(part.get("refusal"), str):
            return {"text": part["refusal"]}  # what the assistant said
        case "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            return _media_part(url, "image/jpeg", "an image_url's url")
        case "input_audio":
            audio = part.get("input_audio")
            if not isinstance(audio, dict) or not isinstance(audio.get("data"), str):
                raise TranslationError("an input_audio part must hold its base64 data")
            return {"inlineData": {"mimeType": f"audio/{audio.get('format') or 'wav'}", "data": audio["data"]}}
        case "file":
            file = part.get("file")
            if not isinstance(file, dict) or not file.get("file_data"):
                raise TranslationError("a file part must carry its file in file_data (file_id is not supported)")
            mime = _mime_of(str(file.get("filename") or ""), "application/pdf")
            return _media_part(file["file_data"], mime, "a file part's file_data")
        case _:
            raise TranslationError(f"content part type {kind!r} is not supported by Gemini in a {role} message")


def _parts(content: Any, role: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    if isinstance(content, list):
        return [_content_part(part, role) for part in content]
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
            contents.append({"role": "user", "parts": _parts(message.get("content"), role)})
        elif role == "assistant":
            parts = _parts(message.get("content"), role) + _function_call_parts(message.get("tool_calls"), names)
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


def _thinking(effort: Any, model: str) -> dict[str, Any]:
    """OpenAI's `reasoning_effort` as GenerationConfig's `thinkingConfig` for `model`."""
    if effort is None:
        return {}
    if not isinstance(effort, str) or effort not in _THINKING_BUDGETS:
        raise TranslationError(f"reasoning_effort must be one of {', '.join(_THINKING_BUDGETS)}, not {effort!r}")
    if _UNTHINKING_MODEL.match(model):
        if effort == "none":  # what the model does anyway; a thinkingConfig it would refuse
            return {}
        raise TranslationError(f"reasoning_effort {effort!r}: {model} does not think; leave it out or send 'none'")
    if _BUDGETED_MODEL.match(model):
        return {"thinkingConfig": {"thinkingBudget": _THINKING_BUDGETS[effort]}}
    return {"thinkingConfig": {"thinkingLevel": _THINKING_LEVELS[effort]}}


def _generation_config(body: Mapping[str, Any], max_output_tokens: int | None, model: str) -> dict[str, Any]:
    config: dict[str, Any] = {}
    max_tokens = own_output_limit(body) or max_output_tokens
    if max_tokens is not None:
        config["maxOutputTokens"] = max_tokens
    for ours, theirs in _NUMBERS:
        if isinstance(body.get(ours), int | float) and not isinstance(body[ours], bool):
            config[theirs] = body[ours]
    config.update(_logprobs(body))
    seed = _integer(body.get("seed"))
    if seed is not None:
        # Vertex's seed is an int32; OpenAI's may be larger. Folding keeps one seed giving one answer.
        config["seed"] = seed if -(2**31) <= seed < 2**31 else seed & INT32_MAX
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
    config.update(_thinking(body.get("reasoning_effort"), model))
    return config


def _logprobs(body: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI's `logprobs` and `top_logprobs` as GenerationConfig's `responseLogprobs` and `logprobs`."""
    if body.get("logprobs") is not True:
        return {}
    top = _integer(body.get("top_logprobs"))
    # top_logprobs 0 asks for the chosen tokens alone
    return {"responseLogprobs": True, "logprobs": top} if top else {"responseLogprobs": True}


def _tools(tools: Any) -> list[dict[str, Any]]:
    """OpenAI's function tools as FunctionDeclarations; TranslationError for any other tool, which Gemini would
    not be given: the model would answer without a tool it was told it had."""
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise TranslationError("tools must be a list")
    declarations: list[dict[str, Any]] = []
    for tool in tools:
        if not isinstance(tool, dict):
            raise TranslationError("each tool must be an object")
        kind = tool.get("type", "function")
        if kind != "function":
            raise TranslationError(f"tool type {kind!r} is not supported; only function tools are")
        function = tool.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise TranslationError("a function tool must have a function with a name")
        declaration: dict[str, Any] = {"name": function["name"]}
        if function.get("description") is not None:
            declaration["description"] = function["description"]
        if function.get("parameters") is not None:
            declaration["parametersJsonSchema"] = function["parameters"]
        declarations.append(declaration)
    return [{"functionDeclarations": declarations}] if declarations else []


def _tool_config(choice: Any) -> dict[str, Any] | None:
    """OpenAI's `tool_choice` as a ToolConfig; TranslationError for one Gemini has no equivalent for (read as auto,
    `allowed_tools` would let the model call any tool)."""
    if choice is None:
        return None
    modes = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
    if isinstance(choice, str) and choice in modes:
        return {"functionCallingConfig": {"mode": modes[choice]}}
    name = named_function(choice)
    if name is None:
        raise TranslationError(unmatched_tool_choice(choice, "Gemini's function calling"))
    return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}


def generate_content_request(
    body: Mapping[str, Any], index: int, *, max_output_tokens: int | None = None, model: str = ""
) -> dict[str, Any]:
    """A chat-completions body as a GenerateContentRequest for `model`, labelled with its line's index;
    `max_output_tokens` caps the output of a request that sets no limit of its own (the bound batchgw's budgets
    reserve)."""
    contents, system = _contents(body.get("messages") or ())
    request: dict[str, Any] = {"contents": contents}
    if system:
        request["systemInstruction"] = {"parts": system}
    config = _generation_config(body, max_output_tokens, model)
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


def input_line(body: Mapping[str, Any], index: int, *, max_output_tokens: int | None = None, model: str = "") -> bytes:
    """One Vertex batch input line for `model`, newline included."""
    request = generate_content_request(body, index, max_output_tokens=max_output_tokens, model=model)
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


def index_in_line(prefix: bytes) -> int | None:
    """The input line index a prediction line that cannot be parsed (cut off, too long) answers, if its start
    shows every one of the line labels, each once; None otherwise."""
    index = 0
    for place, label in enumerate(_LABELS_IN_LINE):
        found = label.findall(prefix)
        if len(found) != 1:
            return None
        index += int(found[0]) * 10**place
    return index
