"""OpenAI chat completions -> Anthropic Messages params, for the `anthropic` provider's batches. Pure: no I/O.

Requests: system and developer messages become the top-level `system`; tool calls and tool results become
`tool_use` and `tool_result` blocks; consecutive turns of one role are merged, as Messages wants roles to
alternate; `max_tokens`, which Anthropic requires, defaults to 4096. Anthropic checks each request's params
only when it runs it, so a param it refuses fails that request at the end of the batch: the params sent stay
within what it takes. `temperature` is clamped to its 0-1 range (OpenAI's is 0-2); `top_p` is sent only without
`temperature`, since recent Claude models refuse the two together; stop sequences that are only whitespace,
which it refuses, are dropped. Sampling knobs Anthropic has no equivalent for (`seed`, penalties, ...) are
dropped; what it cannot answer (`n` > 1, `logprobs: true`) and content it cannot take (audio, OpenAI file ids)
raise TranslationError, since dropping them would silently change what is asked.

Structured output: `json_object` adds an instruction to `system`; `json_schema` becomes a forced tool whose
`input_schema` is the schema, named with SCHEMA_TOOL_PREFIX so that the answer's `tool_use` input is
recognised without the request and returned as the message content, a JSON string, as OpenAI does.

Custom ids Anthropic would refuse are sent hashed and mapped back by hashing the input's ids. Anthropic's
answers are read by shared/providers/anthropic_results.py.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

import orjson

from shared.providers.base import (
    TranslationError,
    named_function,
    own_output_limit,
    refuse_choices_and_logprobs,
    unmatched_tool_choice,
)

DEFAULT_MAX_TOKENS: Final = 4096
SCHEMA_TOOL_PREFIX: Final = "batchgw_json__"
JSON_OBJECT_INSTRUCTION: Final = (
    "Respond with a single valid JSON object and nothing else: no prose before or after it, no code fences."
)
_SCHEMA_TOOL_DESCRIPTION: Final = (
    "Give your final answer by calling this tool; its input is the answer, a JSON object matching the schema."
)
_TOOL_NAME_MAX: Final = 64
_CUSTOM_ID: Final = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_HASHED_ID: Final = re.compile(r"h[0-9a-f]{40}")
_DATA_URL: Final = re.compile(r"data:([\w.+-]+/[\w.+-]+);base64,(.*)", re.DOTALL)
_IMAGE_TYPES: Final = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_TOOL_CHOICES: Final = {"auto": {"type": "auto"}, "none": {"type": "none"}, "required": {"type": "any"}}

JSONObject = dict[str, Any]


# --- requests ---------------------------------------------------------------------------------------


def to_params(body: Mapping[str, Any], model: str, *, max_tokens: int = DEFAULT_MAX_TOKENS) -> JSONObject:
    """An OpenAI chat-completions request body as Anthropic Messages params for `model`; `max_tokens`, which
    Anthropic requires, when the request sets none (the bound batchgw's budgets reserve)."""
    refuse_choices_and_logprobs(body, "Anthropic's Messages API")
    system, messages = _conversation(body.get("messages"))
    params: JSONObject = {
        "model": model,
        "max_tokens": own_output_limit(body) or max_tokens,
        "messages": messages,
    }
    params.update(_sampling(body))
    stops = _stop_sequences(body.get("stop"))
    if stops:
        params["stop_sequences"] = stops
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_object":
        system.append(JSON_OBJECT_INSTRUCTION)
    is_schema = response_format.get("type") == "json_schema"
    json_schema = (response_format.get("json_schema") or {}) if is_schema else None
    params.update(_tool_params(body, json_schema))
    if system:
        params["system"] = "\n\n".join(system)
    user = body.get("user") or body.get("safety_identifier")
    if isinstance(user, str) and user:
        params["metadata"] = {"user_id": user}
    return params


def _sampling(body: Mapping[str, Any]) -> JSONObject:
    """`temperature`, clamped to Anthropic's 0-1, or else `top_p`: recent Claude models refuse the two together."""
    temperature, top_p = _number(body, "temperature"), _number(body, "top_p")
    if temperature is not None:
        return {"temperature": min(max(temperature, 0.0), 1.0)}
    return {} if top_p is None else {"top_p": top_p}


def _number(body: Mapping[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TranslationError(f"{name} must be a number")
    return float(value)


def _stop_sequences(stop: Any) -> list[str]:
    """OpenAI `stop`, a string or a list, without the sequences Anthropic refuses: empty or only whitespace."""
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    return [s for s in stops if isinstance(s, str) and s.strip()]


def _tool_params(body: Mapping[str, Any], json_schema: Mapping[str, Any] | None) -> JSONObject:
    """`tools` and `tool_choice`: the request's function tools, and the forced tool a json_schema becomes."""
    tools = [_tool(t) for t in body.get("tools") or ()]
    choice = _tool_choice(body.get("tool_choice")) if tools else None
    if json_schema is not None:
        schema_tool = _schema_tool(json_schema)
        choice = _schema_tool_choice(choice, schema_tool["name"], has_user_tools=bool(tools))
        tools.append(schema_tool)
    if not tools:
        return {}
    if body.get("parallel_tool_calls") is False:
        choice = choice or {"type": "auto"}
        if choice["type"] != "none":
            choice = {**choice, "disable_parallel_tool_use": True}
    return {"tools": tools, "tool_choice": choice} if choice else {"tools": tools}


def _conversation(raw: Any) -> tuple[list[str], list[JSONObject]]:
    """(system texts, alternating user/assistant messages) of OpenAI `messages`."""
    if not isinstance(raw, list):
        raise TranslationError("messages must be a list")
    system: list[str] = []
    messages: list[JSONObject] = []
    for message in raw:
        role = message.get("role") if isinstance(message, dict) else None
        match role:
            case "system" | "developer":
                system.append(_text_of(message.get("content")))
            case "user":
                _append_turn(messages, "user", _user_content(message.get("content")))
            case "assistant":
                _append_turn(messages, "assistant", _assistant_content(message))
            case "tool":
                _append_turn(messages, "user", [_tool_result(message)])
            case _:
                raise TranslationError(f"message role {role!r} is not supported")
    if not messages:
        raise TranslationError("messages must hold at least one user or assistant message")
    return system, messages


def _append_turn(messages: list[JSONObject], role: str, content: str | list[JSONObject]) -> None:
    """Add a turn, merged into the previous one when it has the same role (Anthropic wants roles to alternate)."""
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"] = _blocks(messages[-1]["content"]) + _blocks(content)
    else:
        messages.append({"role": role, "content": content})


def _blocks(content: str | list[JSONObject]) -> list[JSONObject]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return content


def _text_of(content: Any) -> str:
    """The text of string content or of a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _user_content(content: Any) -> str | list[JSONObject]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise TranslationError("user message content must be a string or a list of content parts")
    return [_user_block(part) for part in content]


def _user_block(part: Any) -> JSONObject:
    kind = part.get("type") if isinstance(part, dict) else None
    match kind:
        case "text":
            return {"type": "text", "text": str(part.get("text", ""))}
        case "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            return _image_block(str(url or ""))
        case "file":
            return _document_block(part.get("file") or {})
        case _:
            raise TranslationError(f"content part type {kind!r} is not supported by Anthropic's Messages API")


def _image_block(url: str) -> JSONObject:
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    found = _DATA_URL.fullmatch(url)
    if found is None or found.group(1) not in _IMAGE_TYPES:
        raise TranslationError(
            f"image_url must be an http(s) URL or a base64 data URL of type {', '.join(sorted(_IMAGE_TYPES))}"
        )
    return {"type": "image", "source": {"type": "base64", "media_type": found.group(1), "data": found.group(2)}}


def _document_block(file: Mapping[str, Any]) -> JSONObject:
    found = _DATA_URL.fullmatch(str(file.get("file_data") or ""))
    if found is None or found.group(1) != "application/pdf":
        raise TranslationError(
            "file parts must carry a PDF as a base64 data URL in file_data (file_id is not supported)"
        )
    return {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": found.group(2)}}


def _assistant_content(message: Mapping[str, Any]) -> str | list[JSONObject]:
    content = message.get("content")
    text = content if isinstance(content, str) else _text_of(content)
    calls = message.get("tool_calls") or []
    if not calls:
        return text
    blocks: list[JSONObject] = [{"type": "text", "text": text}] if text else []
    return blocks + [_tool_use(call) for call in calls]


def _tool_use(call: Mapping[str, Any]) -> JSONObject:
    function = call.get("function") or {}
    arguments = function.get("arguments") or "{}"
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        raise TranslationError(f"tool call {call.get('id')!r} has arguments that are not JSON") from None
    if not isinstance(parsed, dict):
        raise TranslationError(f"tool call {call.get('id')!r} has arguments that are not a JSON object")
    return {"type": "tool_use", "id": call.get("id"), "name": function.get("name"), "input": parsed}


def _tool_result(message: Mapping[str, Any]) -> JSONObject:
    content = message.get("content")
    result: str | list[JSONObject] = (
        content
        if isinstance(content, str)
        else [{"type": "text", "text": str(p.get("text", ""))} for p in content or () if isinstance(p, dict)]
    )
    return {"type": "tool_result", "tool_use_id": message.get("tool_call_id"), "content": result}


def _tool(tool: Mapping[str, Any]) -> JSONObject:
    if tool.get("type") != "function":
        raise TranslationError(f"tool type {tool.get('type')!r} is not supported; only function tools are")
    function = tool.get("function") or {}
    converted: JSONObject = {"name": function.get("name")}
    if function.get("description"):
        converted["description"] = function["description"]
    converted["input_schema"] = function.get("parameters") or {"type": "object", "properties": {}}
    return converted


def _tool_choice(choice: Any) -> JSONObject | None:
    if choice is None:
        return None
    if isinstance(choice, str) and choice in _TOOL_CHOICES:
        return dict(_TOOL_CHOICES[choice])
    name = named_function(choice)
    if name is None:
        raise TranslationError(unmatched_tool_choice(choice, "Anthropic's Messages API"))
    return {"type": "tool", "name": name}


def _schema_tool(json_schema: Mapping[str, Any]) -> JSONObject:
    name = str(json_schema.get("name") or "response")
    return {
        "name": (SCHEMA_TOOL_PREFIX + name)[:_TOOL_NAME_MAX],
        "description": json_schema.get("description") or _SCHEMA_TOOL_DESCRIPTION,
        "input_schema": json_schema.get("schema") or {"type": "object"},
    }


def _schema_tool_choice(choice: JSONObject | None, name: str, *, has_user_tools: bool) -> JSONObject:
    """Force the schema tool, unless the request's own tools may be called: then any tool, the schema's included."""
    if not has_user_tools or (choice is not None and choice["type"] == "none"):
        return {"type": "tool", "name": name}
    return choice if choice is not None and choice["type"] == "tool" else {"type": "any"}


# --- custom ids -------------------------------------------------------------------------------------


def anthropic_custom_id(custom_id: str) -> str:
    """The custom_id sent to Anthropic: ours when Anthropic takes it, else a stable hash.

    An id that looks like such a hash is hashed too, so a passed-through id never equals another's hash.
    """
    if _CUSTOM_ID.fullmatch(custom_id) and not _HASHED_ID.fullmatch(custom_id):
        return custom_id
    return "h" + hashlib.blake2b(custom_id.encode(), digest_size=20).hexdigest()


def is_hashed_custom_id(sent: str) -> bool:
    """Whether `sent` is a hash that only the input's ids can map back."""
    return _HASHED_ID.fullmatch(sent) is not None


def hashed_custom_ids(custom_ids: Iterable[str]) -> dict[str, str]:
    """Sent id -> our id, for the ids that were sent hashed."""
    mapped = ((anthropic_custom_id(c), c) for c in custom_ids)
    return {sent: ours for sent, ours in mapped if sent != ours}
