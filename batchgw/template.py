"""Reading template.yaml: the dev stack and the tests build their AWS resources from its own definitions."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

TEMPLATE = Path(__file__).resolve().parent.parent / "template.yaml"


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form tags (!Ref, !Sub, ...) read as their long forms."""


def _intrinsic(loader: _CfnLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


@cache
def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    data: dict[str, Any] = yaml.load(path.read_text(encoding="utf-8"), Loader=_CfnLoader)
    return data


def resource(logical_id: str, path: Path = TEMPLATE) -> dict[str, Any]:
    found: dict[str, Any] = load_template(path)["Resources"][logical_id]
    return found


@dataclass(frozen=True, slots=True)
class Function:
    logical_id: str
    handler: str
    events: dict[str, dict[str, Any]]
    environment: dict[str, Any]

    def events_of(self, kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
        for name, event in self.events.items():
            if event.get("Type") == kind:
                yield name, event.get("Properties", {})


def functions(path: Path = TEMPLATE) -> list[Function]:
    """Every AWS::Serverless::Function of the template, with its handler and events."""
    return [
        Function(
            logical_id,
            props["Handler"],
            props.get("Events", {}),
            props.get("Environment", {}).get("Variables", {}),
        )
        for logical_id, res in load_template(path)["Resources"].items()
        if res["Type"] == "AWS::Serverless::Function"
        for props in [res["Properties"]]
    ]


def value(value: Any, path: Path = TEMPLATE) -> Any:
    """A property's value, a `Ref` to a parameter read as the parameter's default."""
    if isinstance(value, dict) and set(value) == {"Ref"}:
        parameter = load_template(path)["Parameters"].get(value["Ref"])
        if parameter is not None:
            return parameter.get("Default")
    return value


def table_definition(table_name: str, path: Path = TEMPLATE) -> dict[str, Any]:
    """create_table arguments for the template's table, as the template declares it."""
    props = resource("Table", path)["Properties"]
    return {
        "TableName": table_name,
        "AttributeDefinitions": props["AttributeDefinitions"],
        "KeySchema": props["KeySchema"],
        "GlobalSecondaryIndexes": props.get("GlobalSecondaryIndexes", []),
        "BillingMode": props["BillingMode"],
    }


def ttl_attribute(path: Path = TEMPLATE) -> str | None:
    spec = resource("Table", path)["Properties"].get("TimeToLiveSpecification")
    return str(spec["AttributeName"]) if spec and spec.get("Enabled") else None


def route_pattern(path_template: str) -> re.Pattern[str]:
    """An API Gateway route path (`/v1/files/{file_id}`) as a regex matching one path."""
    parts = re.split(r"(\{[^}/]+\})", path_template)
    regex = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(f"^{regex}$")
