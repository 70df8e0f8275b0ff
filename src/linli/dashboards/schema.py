"""The dashboard JSON schema of grafana-foundation-sdk, derived from the pinned SDK's own types.

The SDK's JSON Schema files live only in its source repository, not in the packages, but
its Python models are generated from the same CUE schemas: every class lists its fields
and their types, and `to_json` gives each field's JSON name. This module turns them into
a JSON Schema (objects closed to unknown keys, non-optional fields required, enums as
enums) and validates dashboards against it, including each panel's plugin options.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import sys
import types
import typing
from collections.abc import Iterator
from functools import cache
from typing import Any

import jsonschema
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import dashboard as sdk_dashboard

Schema = dict[str, Any]

# Relaxed checks: each rejects dashboards Grafana 11.6 accepts and stores.
RELAXED: dict[tuple[str, str], str] = {
    # Typed for Grafana's built-in annotations (limit, tags, type); an annotation from a
    # data source keeps that source's query there instead.
    ("AnnotationQuery", "target"): "a data source's annotation query",
}


class _Mark:
    """Stands in for a field's value, to find the JSON key `to_json` writes it under."""

    def __init__(self, name: str) -> None:
        self.name = name


def _json_keys(cls: type) -> tuple[dict[str, str], set[str]]:
    """Attribute name -> JSON key, read off the class's own `to_json`; and the keys it writes as null."""
    hints = _hints(cls)
    obj = cls()
    for attr in hints:
        setattr(obj, attr, _Mark(attr))
    keys = {value.name: key for key, value in obj.to_json().items() if isinstance(value, _Mark)}
    missing = set(hints) - set(keys)
    if missing:
        raise TypeError(f"{cls.__name__}.to_json does not write {sorted(missing)} as given")
    for attr in hints:
        setattr(obj, attr, None)
    # A key written even when empty (a threshold's base step) may be null.
    nullable = {key for key, value in obj.to_json().items() if value is None}
    return keys, nullable


def _hints(cls: type) -> dict[str, Any]:
    module = sys.modules[cls.__module__]
    own = inspect.get_annotations(cls)
    resolved = typing.get_type_hints(cls, globalns=vars(module))
    return {name: resolved[name] for name in own}


def _optional(tp: Any) -> tuple[Any, bool]:
    """(the type without None, whether None was allowed)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) < len(typing.get_args(tp)):
            return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), True  # noqa: UP007
    return tp, False


class _Builder:
    def __init__(self) -> None:
        self.defs: dict[str, Schema] = {}

    def of(self, tp: Any) -> Schema:  # noqa: PLR0911 (one return per kind of type)
        tp, _ = _optional(tp)
        origin = typing.get_origin(tp)
        if origin in (typing.Union, types.UnionType):
            return {"anyOf": [self.of(a) for a in typing.get_args(tp)]}
        if origin is typing.Literal:
            return {"enum": list(typing.get_args(tp))}
        if origin is list:
            (item,) = typing.get_args(tp)
            return {"type": "array", "items": self.of(item)}
        if origin is dict:
            _, value = typing.get_args(tp)
            return {"type": "object", "additionalProperties": self.of(value)}
        if tp in (object, typing.Any):
            return {}
        simple = {str: "string", bool: "boolean", int: "integer", float: "number"}
        if tp in simple:
            return {"type": simple[tp]}
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return {"enum": [m.value for m in tp]}
        if isinstance(tp, type) and issubclass(tp, cogvariants.Dataquery):
            return {"type": "object"}  # the data source's own query: checked by running it
        if isinstance(tp, type) and callable(getattr(tp, "to_json", None)):
            return self.model(tp)
        raise TypeError(f"no schema for {tp!r}")

    def model(self, cls: type) -> Schema:
        name = cls.__name__
        if name not in self.defs:
            self.defs[name] = {}  # placeholder: models refer to each other
            keys, nullable = _json_keys(cls)
            props: dict[str, Schema] = {}
            required = []
            for attr, tp in _hints(cls).items():
                key = keys[attr]
                relaxed = (name, key) in RELAXED
                props[key] = {"type": "object"} if relaxed else self.of(tp)
                if key in nullable:
                    props[key] = {"anyOf": [props[key], {"type": "null"}]}
                if not _optional(tp)[1]:
                    required.append(key)
            self.defs[name] = {
                "type": "object",
                "properties": props,
                "required": required,
                "additionalProperties": False,
            }
        return {"$ref": f"#/$defs/{name}"}


def schema_of(cls: type) -> Schema:
    """A JSON Schema (2020-12) for one SDK model class and everything it contains."""
    builder = _Builder()
    root = builder.model(cls)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **root, "$defs": builder.defs}


@cache
def dashboard_schema() -> Schema:
    """The dashboard model's schema."""
    return schema_of(sdk_dashboard.Dashboard)


@cache
def _plugin_schema(panel_type: str, model: str) -> Schema | None:
    """The schema of a panel plugin's Options or FieldConfig, where the SDK has the plugin."""
    try:
        module = importlib.import_module(f"grafana_foundation_sdk.models.{panel_type.replace('-', '')}")
    except ModuleNotFoundError:
        return None
    cls = getattr(module, model, None)
    return schema_of(cls) if isinstance(cls, type) else None


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its own


def problems(dashboard: dict[str, Any]) -> list[str]:
    """Every place a dashboard breaks the schema, as 'path: message'."""
    out = [
        _describe(e, "") for e in jsonschema.Draft202012Validator(dashboard_schema()).iter_errors(dashboard)
    ]
    for panel in _panels(dashboard):
        where = f"panel '{panel.get('title', panel.get('id'))}'"
        checks = [
            ("Options", panel.get("options")),
            ("FieldConfig", panel.get("fieldConfig", {}).get("defaults", {}).get("custom")),
        ]
        for model, value in checks:
            schema = _plugin_schema(panel["type"], model)
            if schema is not None and value is not None:
                validator = jsonschema.Draft202012Validator(schema)
                out.extend(_describe(e, f"{where} {model.lower()}") for e in validator.iter_errors(value))
    return out


def _describe(error: jsonschema.ValidationError, prefix: str) -> str:
    if error.context:
        # Of a union (a panel or a row), the branch that came closest says what is wrong.
        error = jsonschema.exceptions.best_match(error.context)
    path = "/".join(str(p) for p in error.absolute_path)
    return f"{prefix} {path}: {error.message}".strip()
