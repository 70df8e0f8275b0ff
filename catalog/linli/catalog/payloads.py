"""MQTT payloads: a profile's message description compiled into a validator of JSON bytes.

The compiled pydantic model parses and checks the raw bytes in one pass in Rust, with
no intermediate dict, because every message of every device goes through it. A payload
that does not pass comes out as a PayloadError with a short reason (the counter it is
filed under) and a detail naming the key.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic_core import ErrorDetails

from linli.catalog.lineprotocol import FieldValue
from linli.catalog.mqttspec import FieldType, MqttMessage, PayloadField
from linli.catalog.readings import MAX_TIME_MS, MIN_TIME_MS

# No control characters: line protocol cannot carry a newline in a value.
_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"

_RANGE_ERRORS = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal"})
_MALFORMED_ERRORS = frozenset({"json_invalid", "json_type"})


class PayloadError(ValueError):
    """A payload that is not a valid message: `reason` is its counter, the text says why."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _annotation(f: PayloadField) -> Any:
    if f.type is FieldType.FLOAT:
        return float
    if f.type is FieldType.INT:
        return int
    if f.type is FieldType.BOOL:
        return bool
    if f.choices is not None:
        return Literal[tuple(f.choices)]
    return str


def _field_info(f: PayloadField) -> Any:
    kwargs: dict[str, Any] = {"alias": f.json_key}
    if f.min is not None:
        kwargs["ge"] = f.min
    if f.max is not None:
        kwargs["le"] = f.max
    if f.type is FieldType.STRING and f.choices is None:
        kwargs["max_length"] = f.max_length
        kwargs["pattern"] = f.pattern or _PRINTABLE
    if f.type is FieldType.FLOAT:
        kwargs["allow_inf_nan"] = False
    if not f.required:
        return (_annotation(f) | None, Field(default=None, **kwargs))
    return (_annotation(f), Field(**kwargs))


class CompiledMessage:
    """Validates one message kind's payloads and splits them into tags, fields and time."""

    def __init__(self, spec: MqttMessage) -> None:
        self.spec = spec
        definitions: dict[str, Any] = {f"f_{f.name}": _field_info(f) for f in spec.fields}
        if spec.time_key is not None:
            definitions["t_time"] = (int, Field(alias=spec.time_key, ge=MIN_TIME_MS, le=MAX_TIME_MS))
        # Strict: "12" is not 12 and 1 is not true; extra keys are ignored so that a firmware
        # update that adds a key does not stop the data.
        config = ConfigDict(strict=True, extra="ignore", populate_by_name=False)
        self.model: type[BaseModel] = create_model(f"{spec.name}_payload", __config__=config, **definitions)
        self._tags = tuple(f.name for f in spec.fields if f.tag)
        self._fields = tuple(f.name for f in spec.fields if not f.tag)

    def parse(self, payload: bytes) -> tuple[dict[str, str], dict[str, FieldValue], int | None]:
        """(tags, fields, device time in ms or None); PayloadError when invalid."""
        try:
            obj = self.model.model_validate_json(payload)
        except ValidationError as exc:
            raise self._error(exc) from None
        values = obj.__dict__
        tags = {name: values[f"f_{name}"] for name in self._tags}
        fields = {name: v for name in self._fields if (v := values[f"f_{name}"]) is not None}
        return tags, fields, values.get("t_time")

    def _error(self, exc: ValidationError) -> PayloadError:
        errors = exc.errors(include_url=False)
        first: ErrorDetails = errors[0]
        kind = first["type"]
        loc = first["loc"]
        key = str(loc[0]) if loc else ""  # errors name the JSON key (the alias)
        got = first.get("input")
        shown = repr(got)[:60] if loc and not isinstance(got, dict) else ""
        where = f"key '{key}': " if key else ""
        detail = f"{where}{first['msg']}" + (f" (got {shown})" if shown else "")
        if len(errors) > 1:
            detail += f"; and {len(errors) - 1} more"
        if kind in _MALFORMED_ERRORS:
            return PayloadError("malformed", f"not JSON: {first['msg']}")
        if loc and loc[0] == self.spec.time_key:
            return PayloadError("bad_time", detail)
        if kind == "finite_number":
            return PayloadError("not_finite", detail)
        if kind in _RANGE_ERRORS:
            return PayloadError("out_of_range", detail)
        return PayloadError("invalid", detail)
