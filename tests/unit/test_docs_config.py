"""docs/config.md documents every key of the config model."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

from marlmesh.config import Config

ROOT = Path(__file__).resolve().parents[2]


def _model(annotation: Any) -> Any:
    """The one pydantic model an annotation holds directly (``X`` or ``X | None``), else None."""
    if getattr(annotation, "model_fields", None) is not None:
        return annotation
    models = [a for a in typing.get_args(annotation) if getattr(a, "model_fields", None) is not None]
    return models[0] if len(models) == 1 and typing.get_origin(annotation) is not list else None


def _members(annotation: Any) -> list[Any]:
    """Models inside a list's item type (``list[A | B]``, through ``Annotated``)."""
    if getattr(annotation, "model_fields", None) is not None:
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _members(arg)]


def key_paths(model: Any = Config, prefix: str = "") -> set[str]:
    """Every leaf key as written in the docs: ``bus.links.default.loss``, ``faults[].at_env_steps``."""
    paths = set()
    for name, field in model.model_fields.items():
        path = prefix + name
        sub = _model(field.annotation)
        if sub is not None:
            paths |= key_paths(sub, path + ".")
            continue
        paths.add(path)
        if path == "faults":
            for member in _members(field.annotation):
                paths |= key_paths(member, "faults[].")
    return paths


def test_every_config_key_is_in_docs_config_md() -> None:
    text = (ROOT / "docs" / "config.md").read_text()
    keys = key_paths()
    assert {"seed", "bus.links.default.loss", "runtime.tls.keys_dir", "faults[].at_env_steps"} <= keys
    missing = sorted(k for k in keys if f"`{k}`" not in text)
    assert not missing, f"docs/config.md does not document: {', '.join(missing)}"
