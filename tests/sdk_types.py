"""Checking values against the types of the providers' own SDKs, strictly.

pydantic validates a TypedDict without refusing keys it does not declare, and validates `Iterable` fields
only as they are iterated, so `sdk_problems` drains what it validates and looks for undeclared keys itself,
through every nested TypedDict. Parsed pydantic models keep undeclared fields in `model_extra`, which
`extra_fields` lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from types import UnionType
from typing import Annotated, Any, Literal, NotRequired, Required, Union, get_args, get_origin, get_type_hints

from openai.types.chat import ChatCompletion
from pydantic import BaseModel, TypeAdapter, ValidationError
from typing_extensions import is_typeddict  # typing.is_typeddict misses the SDK's typing_extensions TypedDicts


def sdk_problems(value: Any, adapter: TypeAdapter[Any], hint: Any) -> list[str]:
    """What the SDK type `hint` (validated by `adapter`) refuses in `value`: wrong types, missing or unknown keys."""
    try:
        _drained(adapter.validate_python(value, strict=True))
    except ValidationError as exc:
        return [str(exc)]
    return [path.lstrip(".") for path in unknown_keys(value, hint, "")]


def _drained(value: Any) -> Any:
    """`value` with the lazy validators pydantic puts in place of `Iterable` fields run to the end."""
    if isinstance(value, dict):
        return {key: _drained(item) for key, item in value.items()}
    if isinstance(value, list | tuple | Iterator):
        return [_drained(item) for item in value]
    return value


def unknown_keys(value: Any, hint: Any, where: str) -> list[str]:
    """The paths of keys in `value` that the SDK type `hint` has no place for, through nested TypedDicts."""
    if is_typeddict(hint):
        return _typeddict_unknown_keys(value, hint, where) if isinstance(value, dict) else []
    options = _options(hint)
    if len(options) > 1:
        return _union_unknown_keys(value, options, where)
    origin = get_origin(hint)
    if isinstance(value, list) and isinstance(origin, type) and issubclass(origin, Iterable) and origin is not dict:
        (item,) = get_args(hint)[:1]
        return [path for i, element in enumerate(value) for path in unknown_keys(element, item, f"{where}.{i}")]
    return []


def _typeddict_unknown_keys(value: dict[str, Any], typeddict: Any, where: str) -> list[str]:
    fields = get_type_hints(typeddict)
    allows_extra = (getattr(typeddict, "__pydantic_config__", None) or {}).get("extra") == "allow"
    found = [] if allows_extra else [f"{where}.{key}" for key in value if key not in fields]
    for key, item in value.items():
        if key in fields:
            found += unknown_keys(item, fields[key], f"{where}.{key}")
    return found


def _union_unknown_keys(value: Any, options: list[Any], where: str) -> list[str]:
    """Unknown keys for the union member `value` is: a TypedDict tagged with its `type`, else the best fit."""
    if isinstance(value, dict):
        if any(get_origin(option) is dict for option in options):
            return []
        candidates = [o for o in options if is_typeddict(o) and _tagged(o, value.get("type"))]
        if not candidates:
            return [f"{where}: no SDK param type is tagged {value.get('type')!r}"]
    elif isinstance(value, list):
        candidates = [o for o in options if isinstance(get_origin(o), type) and issubclass(get_origin(o), Iterable)]
    else:
        return []
    return min((unknown_keys(value, option, where) for option in candidates), key=len, default=[])


def _options(hint: Any) -> list[Any]:
    """The members of a union (flattened; Annotated and Required stripped), or [hint]."""
    if get_origin(hint) in (Annotated, Required, NotRequired):
        return _options(get_args(hint)[0])
    if get_origin(hint) in (Union, UnionType):
        return [member for arg in get_args(hint) for member in _options(arg)]
    return [hint]


def _tagged(typeddict: Any, tag: Any) -> bool:
    """Whether a value tagged `type: tag` (None: untagged) can be `typeddict`."""
    hint = get_type_hints(typeddict, include_extras=True).get("type")
    if hint is None:
        return tag is None
    if tag is None:
        return get_origin(hint) is not Required
    return any(tag in get_args(option) for option in _options(hint) if get_origin(option) is Literal)


def extra_fields(model: Any, where: str = "") -> list[str]:
    """The paths of fields a parsed pydantic model took without declaring them (its `model_extra`)."""
    if isinstance(model, list):
        return [path for i, item in enumerate(model) for path in extra_fields(item, f"{where}.{i}")]
    if not isinstance(model, BaseModel):
        return []
    found = [f"{where}.{name}".lstrip(".") for name in model.model_extra or {}]
    for name in type(model).model_fields:
        found += extra_fields(getattr(model, name), f"{where}.{name}")
    return found


def openai_completion_problems(line: dict[str, Any]) -> list[str]:
    """What openai's ChatCompletion refuses, or does not declare, in a result line's succeeded response body."""
    try:
        completion = ChatCompletion.model_validate(line["response"]["body"])
    except ValidationError as exc:
        return [str(exc)]
    return extra_fields(completion)
