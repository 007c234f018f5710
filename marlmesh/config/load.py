"""Loading a config: YAML file, ``--set`` overrides, validation with errors that name the key."""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from marlmesh.config.base import ConfigError
from marlmesh.config.run import Config


def parse_override(item: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value`` into ``(["a", "b", "c"], value)``; the value is a YAML scalar.

    Raises:
        ConfigError: If the item has no ``=`` or an empty key.
    """
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.total_env_steps=20000")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set {item!r}: empty key segment in {key!r}")
    return parts, _parse_scalar(raw)


def _parse_scalar(raw: str) -> Any:
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    try:
        return yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        return raw


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with every ``--set`` override applied."""
    out = yaml.safe_load(yaml.safe_dump(data)) or {}
    for item in overrides:
        parts, value = parse_override(item)
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(parts[: i + 1])} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return out


def _models_in(annotation: Any) -> list[Any]:
    """Pydantic models inside an annotation (through ``list[...]``, unions and ``Annotated``)."""
    if getattr(annotation, "model_fields", None) is not None:
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _valid_keys_at(loc: tuple[Any, ...]) -> list[str]:
    model: Any = Config
    for part in loc:
        if isinstance(part, int):  # list index: stay on the list's annotation
            continue
        candidates = _models_in(model)
        tagged = [m for m in candidates if _literal_kind(m) == part]
        if tagged:  # discriminated union member, e.g. faults.0.kill
            model = tagged[0]
            continue
        fields = candidates[0].model_fields if len(candidates) == 1 else None
        if fields is None or part not in fields:
            return []
        model = fields[part].annotation
    candidates = _models_in(model)
    return sorted(candidates[0].model_fields) if len(candidates) == 1 else []


def _literal_kind(model: Any) -> Any:
    field = model.model_fields.get("kind")
    args = typing.get_args(field.annotation) if field is not None else ()
    return args[0] if len(args) == 1 else None


def _describe(err: dict[str, Any]) -> str:
    loc = tuple(p for p in err["loc"] if isinstance(p, str | int))
    path = ".".join(str(p) for p in loc) or "<root>"
    if err["type"] == "extra_forbidden":
        valid = _valid_keys_at(loc[:-1])
        near = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
        hint = f"; did you mean {'.'.join([*map(str, loc[:-1]), near[0]])!r}?" if near else ""
        return f"unknown config key {path!r}{hint} (valid keys here: {', '.join(valid)})"
    msg = err["msg"].removeprefix("Value error, ")
    if not loc:  # a check across sections names its keys itself
        return f"config: {msg}"
    got = err.get("input")
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    return f"config key {path!r}: {msg}{shown}"


def validate(data: dict[str, Any]) -> Config:
    """Validate a plain dict into a :class:`Config`.

    Raises:
        ConfigError: One line listing every problem with its key path.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"config must be a mapping at the top level, got {type(data).__name__}")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("; ".join(_describe(e) for e in exc.errors())) from None


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config file (or the defaults when ``path`` is None) and apply ``--set`` overrides.

    Raises:
        ConfigError: If the file is missing or unreadable, or the result does not validate.
    """
    data: Any = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} not found")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {' '.join(str(exc).split())}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {str(p)!r} must hold a mapping, got {type(data).__name__}")
    return validate(apply_overrides(data, overrides or []))


def dump_config(config: Config) -> str:
    """The resolved config as YAML (every key, defaults included)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
