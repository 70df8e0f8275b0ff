"""Errors that name the file, the key and the fix."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigError(Exception):
    """A profile or config file that cannot be used, with every problem in it."""

    def __init__(self, path: Path | str, problems: list[str]) -> None:
        self.path = str(path)
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{self.path}: {len(problems)} problem(s):\n{lines}")


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _owner(model: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """Walk the model along `loc` to the model whose key its last part is."""
    current: type[BaseModel] | None = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return None
        current = _model_in(fields[part].annotation)
        if current is None:
            return None
    return current


def _allowed_keys(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The keys allowed where an unknown key was found."""
    fields = getattr(_owner(model, loc), "model_fields", None)
    return sorted(fields) if fields else []


def _renamed_to(model: type[BaseModel], loc: tuple[int | str, ...]) -> str | None:
    """The key's name now, if the key at `loc` is one its table renamed (`RENAMED_KEYS`)."""
    renamed: dict[str, str] = getattr(_owner(model, loc), "RENAMED_KEYS", {})
    return renamed.get(str(loc[-1])) if loc else None


def _model_in(annotation: object) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def describe_validation_error(model: type[BaseModel], exc: ValidationError) -> list[str]:
    """Turn pydantic's errors into one line each: key, what is wrong, what is expected."""
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = _key_path(loc)
        if err["type"] == "extra_forbidden" and (now := _renamed_to(model, loc)):
            problems.append(f"key '{key}': renamed: use '{now}' (the same value) instead")
        elif err["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc)
            hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
            problems.append(f"key '{key}': unknown key (a typo?){hint}")
        elif err["type"] == "missing":
            problems.append(f"key '{key}': required but missing")
        else:
            got = err.get("input")
            shown = repr(got) if not isinstance(got, dict) else "a table"
            problems.append(f"key '{key}': {err['msg']} (got {shown})")
    return problems


def load_toml_model(path: Path, model: type[M]) -> M:
    """Read a TOML file into `model`; ConfigError names each bad key and what is allowed."""
    return validate_model(path, read_toml(path), model)


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file's document; ConfigError when it cannot be read or is not TOML."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, [f"not valid TOML: {exc}"]) from exc
    except OSError as exc:
        raise ConfigError(path, [f"cannot read: {exc.strerror}"]) from exc


def validate_model(path: Path, data: dict[str, Any], model: type[M]) -> M:
    """`data` (read from `path`) as `model`; ConfigError names each bad key and what is allowed."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(path, describe_validation_error(model, exc)) from exc


def validation_reason(exc: ValidationError) -> str:
    """The first problem pydantic found, as one line: where, and what."""
    return validation_reasons(exc)[0]


def validation_reasons(exc: ValidationError) -> list[str]:
    """Every problem pydantic found, one line each: where, and what."""
    return [
        f"{'.'.join(str(p) for p in err['loc']) or '(the document)'}: {err['msg']}" for err in exc.errors()
    ]
