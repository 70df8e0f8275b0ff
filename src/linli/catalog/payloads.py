"""MQTT payloads: a profile's message description compiled into a validator of JSON bytes.

Every message of every device goes through here, so it is compiled twice. A msgspec Struct
decodes and checks the raw bytes in one pass in C (a third less CPU than pydantic-core); when it
refuses a payload, the pydantic model, which holds the same rules, decides: it names the reason
(the counter a refusal is filed under) and the key, or takes what msgspec alone is stricter
about. Either way a payload is accepted or refused, with the same values, as by the pydantic
model alone (tests/catalog/test_fastpayload.py holds the two to that over a varied corpus).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from operator import attrgetter
from typing import Annotated, Any, Literal

import msgspec
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic_core import ErrorDetails

from linli.catalog.lineprotocol import FieldValue, escape_key, escape_string, format_field, format_field_value
from linli.catalog.mqttspec import FieldType, MqttMessage, PayloadField
from linli.catalog.readings import MAX_TIME_MS, MIN_TIME_MS

# No control characters: line protocol cannot carry a newline in a value.
_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"

_RANGE_ERRORS = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal"})
_MALFORMED_ERRORS = frozenset({"json_invalid", "json_type"})


def _formatter(name: str, kind: FieldType) -> Callable[[Any], str]:
    """`name=value` for one field whose type validation has already fixed."""
    prefix = escape_key(name) + "="
    if kind is FieldType.FLOAT:
        return lambda v: prefix + repr(v)  # validated: a finite float
    if kind is FieldType.INT:
        return lambda v: f"{prefix}{v}i"
    if kind is FieldType.BOOL:
        return lambda v: prefix + ("true" if v else "false")
    return lambda v: prefix + format_field_value(v)


def _field_set_function(fields: Sequence[PayloadField]) -> Callable[[Any], str]:
    """The field set of one message kind's validated values, as one generated f-string function.

    A message's fields are formatted in one expression, without a call or a list per field:
    less than half the CPU of a formatter per field, on every message. Field names are
    identifiers (mqttspec's `Name`), so they go into the code as they are and need no escaping.
    """
    body = []
    run: list[str] = []  # required fields in a row: one f-string
    emitted = ""  # "": nothing yet, "maybe": only optional fields (`s` may be empty), "yes"
    commas = {"": "", "maybe": '{"," if s else ""}', "yes": ","}
    for f in fields:
        if not f.name.isidentifier() or escape_key(f.name) != f.name:
            raise ValueError(f"payload field '{f.name}': not an identifier")
        value = f"v.f_{f.name}" if f.required else "x"
        if f.type is FieldType.FLOAT:
            text = f"{f.name}={{{value}!r}}"  # validated: a finite float
        elif f.type is FieldType.INT:
            text = f"{f.name}={{{value}}}i"
        elif f.type is FieldType.BOOL:
            text = f'{f.name}={{"true" if {value} else "false"}}'
        else:
            text = f'{f.name}="{{escape_string({value})}}"'
        if f.required:
            run.append(text if run else commas[emitted] + text)
            emitted = "yes"
            continue
        if run:
            body.append(f"    s += f'''{','.join(run)}'''")
            run.clear()
        body.append(f"    if (x := v.f_{f.name}) is not None:\n        s += f'''{commas[emitted]}{text}'''")
        emitted = emitted or "maybe"
    if run:
        body.append(f"    s += f'''{','.join(run)}'''")
    source = 'def field_set(v):\n    s = ""\n' + "\n".join(body) + "\n    return s\n"
    namespace: dict[str, Any] = {"escape_string": escape_string}
    exec(source, namespace)  # noqa: S102 (code made above from the profile's identifiers)
    return namespace["field_set"]  # type: ignore[no-any-return]


# Where Python's `re` and Rust's regex (pydantic's) disagree: Unicode classes (Python's `\w`
# takes '½', its `\s` the controls \x1c-\x1f), inline flags (Python's (?i) folds 'İ' to 'i'),
# POSIX classes (Python reads `[[:digit:]]` as another set). A pattern with one of these is
# checked by pydantic alone, as before the fast path.
_UNLIKE_IN_RUST = re.compile(r"\\[wWsSbBdDpP]|\(\?|\[\[:")


def _fast_pattern(pattern: str) -> str:
    r"""A pydantic (Rust regex) pattern for Python's `re`, which msgspec uses: there `$` also
    matches before a final newline, which line protocol cannot carry; `\Z` does not. ValueError
    for a pattern the two engines may read differently (`_UNLIKE_IN_RUST`)."""
    if pattern.count("$") != 1 or not pattern.endswith("$") or pattern.endswith("\\$"):
        raise ValueError(f"pattern {pattern!r}: only a final '$' is translated")
    if _UNLIKE_IN_RUST.search(pattern):
        raise ValueError(f"pattern {pattern!r}: Python's re may read it unlike Rust's regex")
    re.compile(pattern)
    return pattern[:-1] + r"\Z"


def _fast_type(f: PayloadField) -> Any:
    """The msgspec type of one field, with the same checks as `_field_info`'s."""
    kind: Any
    if f.type is FieldType.FLOAT:
        kind = Annotated[float, msgspec.Meta(ge=f.min, le=f.max)]
    elif f.type is FieldType.INT:
        # On integers, `>= 0.5` is `>= 1`: msgspec wants integer bounds for an int.
        low = None if f.min is None else math.ceil(f.min)
        high = None if f.max is None else math.floor(f.max)
        kind = Annotated[int, msgspec.Meta(ge=low, le=high)]
    elif f.type is FieldType.BOOL:
        kind = bool
    elif f.choices is not None:
        kind = Literal[tuple(f.choices)]
    else:
        pattern = _fast_pattern(f.pattern or _PRINTABLE)
        kind = Annotated[str, msgspec.Meta(max_length=f.max_length, pattern=pattern)]
    return kind if f.required else kind | None


def _fast_decoder(spec: MqttMessage) -> Callable[[bytes], Any] | None:
    """msgspec's decoder of the message's payloads into attributes named as the pydantic model's;
    None when a field has a check it cannot make the same (a pattern with an inner `$`)."""
    definitions: list[tuple[str, Any, Any]] = []
    try:
        for f in spec.fields:
            default = msgspec.NODEFAULT if f.required else None
            definitions.append(
                (f"f_{f.name}", _fast_type(f), msgspec.field(name=f.json_key, default=default))
            )
    except ValueError:
        return None
    if spec.time_key is not None:
        ts = Annotated[int, msgspec.Meta(ge=MIN_TIME_MS, le=MAX_TIME_MS)]
        definitions.append(("t_time", ts, msgspec.field(name=spec.time_key)))
    struct = msgspec.defstruct(f"{spec.name}_fast", definitions, kw_only=True, gc=False)
    return msgspec.json.Decoder(struct).decode


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
        # The validator itself: `model.model_validate_json` wraps it in Python that costs a
        # tenth of a message's handling.
        self._validate_json = self.model.__pydantic_validator__.validate_json
        self._fast = _fast_decoder(spec)
        # Attribute names and formatters are built once: they serve every message of every device.
        tags = [f for f in spec.fields if f.tag]
        fields = [f for f in spec.fields if not f.tag]
        self._tags = tuple((attrgetter(f"f_{f.name}"), f.name) for f in tags)
        self._fields = tuple((attrgetter(f"f_{f.name}"), f.name) for f in fields)
        self._formatters = {f.name: _formatter(f.name, f.type) for f in fields}
        self.field_set_of: Callable[[Any], str] = _field_set_function(fields)
        """The line-protocol field set straight from validated values: `field_set(fields(values))`."""
        self._time = attrgetter("t_time") if spec.time_key is not None else None
        self.has_tags = bool(tags)

    def validate(self, payload: bytes) -> Any:
        """The validated values as attributes (see `tags`, `fields`, `time_ms`); PayloadError when invalid."""
        if self._fast is not None:
            try:
                return self._fast(payload)
            except msgspec.MsgspecError:
                pass  # refused: pydantic says why, or takes what only msgspec is stricter about
        try:
            return self._validate_json(payload)
        except ValidationError as exc:
            raise self._error(exc) from None

    def parse(self, payload: bytes) -> tuple[dict[str, str], dict[str, FieldValue], int | None]:
        """(tags, fields, device time in ms or None); PayloadError when invalid."""
        values = self.validate(payload)
        return self.tags(values), self.fields(values), self.time_ms(values)

    def tags(self, values: Any) -> dict[str, str]:
        """The fields that are tags, by name."""
        return {name: get(values) for get, name in self._tags}

    def fields(self, values: Any) -> dict[str, FieldValue]:
        """The fields that are present and not tags, by name."""
        return {name: v for get, name in self._fields if (v := get(values)) is not None}

    def time_ms(self, values: Any) -> int | None:
        """The device's own timestamp, when the message has one."""
        return None if self._time is None else self._time(values)

    def field_set(self, fields: Mapping[str, FieldValue]) -> str:
        """The line-protocol field set of parsed fields, plus any added since (same as format_fields)."""
        known = self._formatters
        return ",".join([known[k](v) if k in known else format_field(k, v) for k, v in fields.items()])

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
