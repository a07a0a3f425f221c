"""Broken result lines, one vocabulary for every fake provider: what `corrupt` and `garbage` make a fake write.

A fake's `corrupt` maps custom_ids to a Defect: that request's succeeded result line is written in the
provider's own format, then broken as `written` says, which knows where that format keeps each part from
its LineFormat. A fake with `garbage` set mixes `garbage_lines` (lines that name no request) into its
results. Fakes write their results with `result_rows`, after any shuffling, so a repeated line always
comes right after the line it repeats.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from copy import deepcopy
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

import orjson

Defect = Literal[
    "no_status",  # the line says neither that the request succeeded nor that it failed
    "status_as_string",  # the status given as the string "200"
    "body_not_object",  # the answer is a string, not an object
    "negative_usage",  # a token count below zero
    "usage_not_number",  # a token count given as text
    "duplicate",  # the line written twice
    "duplicate_differing",  # the line written twice, the second time with other usage
    "cut",  # the line cut off mid-JSON
]
DEFECTS: Final[tuple[Defect, ...]] = get_args(Defect)
NOT_AN_OBJECT: Final = "<html><body>502 Bad Gateway</body></html>"
NEGATIVE_TOKENS: Final = -5
EXTRA_TOKENS: Final = 1000  # what a differing repeat adds to the usage of the line it repeats
NOT_JSON: Final = b"\x00\xff<html>upstream proxy error\xfe\n"

Path = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LineFormat:
    """Where a provider's result line keeps what the defects break, as paths of keys."""

    names: Path  # what names the request: custom_id, recordId, the labels
    markers: tuple[Path, ...]  # what says the request succeeded or failed, all dropped by no_status
    status: Path | None  # a status that can be given as "200"; None: the format has none
    body: Path  # the answer
    usage: Path  # one token count of the answer's usage
    # written as Python's json.dumps writes, as OpenAI documents its lines: `", "`, `": "`, non-ASCII escaped
    spaced: bool = False

    def takes(self, defect: Defect) -> bool:
        """Whether a line of this format can have `defect`."""
        return defect != "status_as_string" or self.status is not None


# an OpenAI-shaped output line (OpenAI, Azure, Together, Mistral)
OPENAI_LINE: Final = LineFormat(
    names=("custom_id",),
    markers=(("response", "status_code"),),
    status=("response", "status_code"),
    body=("response", "body"),
    usage=("response", "body", "usage", "prompt_tokens"),
    spaced=True,
)


def _parent(line: dict[str, Any], path: Path) -> dict[str, Any]:
    node = line
    for key in path[:-1]:
        node = node[key]
    return node


def _set(line: dict[str, Any], path: Path, value: Any) -> dict[str, Any]:
    changed = deepcopy(line)
    _parent(changed, path)[path[-1]] = value
    return changed


def _without(line: dict[str, Any], *paths: Path) -> dict[str, Any]:
    changed = deepcopy(line)
    for path in paths:
        _parent(changed, path).pop(path[-1], None)
    return changed


def _get(line: dict[str, Any], path: Path) -> Any:
    return _parent(line, path)[path[-1]]


def _bytes(line: dict[str, Any], form: LineFormat) -> bytes:
    if form.spaced:
        return json.dumps(line).encode() + b"\n"
    return orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)


def written(line: dict[str, Any], defect: Defect | None, form: LineFormat) -> bytes:
    """The bytes a fake writes for a succeeded request's result `line`: the line broken by `defect`."""
    if defect is not None and not form.takes(defect):
        raise ValueError(f"a line of this format cannot have the defect {defect!r}")
    match defect:
        case None:
            return _bytes(line, form)
        case "no_status":
            return _bytes(_without(line, *form.markers), form)
        case "status_as_string":
            assert form.status is not None
            return _bytes(_set(line, form.status, "200"), form)
        case "body_not_object":
            return _bytes(_set(line, form.body, NOT_AN_OBJECT), form)
        case "negative_usage":
            return _bytes(_set(line, form.usage, NEGATIVE_TOKENS), form)
        case "usage_not_number":
            return _bytes(_set(line, form.usage, f"{_get(line, form.usage)} tokens"), form)
        case "duplicate":
            return _bytes(line, form) * 2
        case "duplicate_differing":
            return _bytes(line, form) + _bytes(_set(line, form.usage, _get(line, form.usage) + EXTRA_TOKENS), form)
        case "cut":
            whole = _bytes(line, form)
            return whole[: len(whole) // 2] + b"\n"


def garbage_lines(line: dict[str, Any], form: LineFormat) -> bytes:
    """Lines that name no request: bytes that are not JSON, JSON that is not an object, and a copy of the
    result `line` without what names its request."""
    return NOT_JSON + b"[1, 2, 3]\n" + _bytes(_without(line, form.names), form)


def result_rows(
    lines: Sequence[tuple[dict[str, Any], Defect | None]], form: LineFormat, *, garbage: bool
) -> list[bytes]:
    """What a results file of `lines` holds, as one entry per line: its bytes written broken by its defect;
    and, if `garbage`, garbage lines as one more entry after the first."""
    rows = [written(line, defect, form) for line, defect in lines]
    if garbage and lines:
        rows.insert(1, garbage_lines(lines[0][0], form))
    return rows
