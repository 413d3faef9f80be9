"""Loading the settings: the YAML file < the environment (`POLLER_SECTION__KEY`) < CLI
flags, validated once; every failure one `ConfigError` (located by `locating`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from poller.config.locating import config_error, known
from poller.config.settings import Settings
from poller.config.values import ENV_PREFIX
from poller.errors import ConfigError

Overrides = Mapping[str, Mapping[str, Any] | list[Any]]  # `services` is a list


def load_settings(
    path: Path | None,
    environ: Mapping[str, str] | None = None,
    overrides: Overrides | None = None,
) -> Settings:
    """Build `Settings` from a YAML file, the environment and CLI overrides (in rising
    precedence). Every failure is a `ConfigError` naming where it comes from."""
    source = str(path) if path is not None else "defaults"
    data: dict[str, Any] = {}
    tree: yaml.Node | None = None
    if path is not None:
        data, tree = _read_yaml(path)
    origins: dict[tuple[str, str], str] = {}
    env_data = _env_overrides(os.environ if environ is None else environ)
    for layer, origin in ((env_data, "env"), (overrides or {}, "flag")):
        for section, values in layer.items():
            if not isinstance(values, Mapping):  # a list section (`services`): replaced whole
                data[section] = values
                continue
            target = data.setdefault(section, {})
            if not isinstance(target, dict):
                raise ConfigError(f"{source}: {section}", "must be a mapping")
            for key, value in values.items():
                target[key] = value
                origins[(section, key)] = origin
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise config_error(exc, source, tree, origins) from None


def _read_yaml(path: Path) -> tuple[dict[str, Any], yaml.Node | None]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), "is not UTF-8 text") from exc
    try:
        tree = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(where, f"malformed YAML: {problem}") from exc
    if data is None:
        return {}, None
    if not isinstance(data, dict):
        raise ConfigError(str(path), "the top level must be a mapping of sections")
    if tree is not None:
        _reject_duplicate_keys(tree, path)
    return data, tree


def _reject_duplicate_keys(node: yaml.Node, path: Path, prefix: str = "") -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            dotted = f"{prefix}.{key}" if prefix else key
            if key in seen:
                raise ConfigError(
                    f"{path}:{key_node.start_mark.line + 1}: {dotted}", "key repeated"
                )
            seen.add(key)
            _reject_duplicate_keys(value_node, path, dotted)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _reject_duplicate_keys(item, path, prefix)


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """`POLLER_PROBE__TIMEOUT_SECONDS=0.3` -> {"probe": {"timeout_seconds": 0.3}}; values are
    YAML scalars or flow collections (`[3000, 8080]`, `{header: x-id}`)."""
    result: dict[str, dict[str, Any]] = {}
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        if not section or not key or "__" in key:
            raise ConfigError(name, "expected POLLER_SECTION__KEY")
        if section not in Settings.model_fields:
            raise ConfigError(name, f"unknown section {section!r} (known: {known(Settings)})")
        if section == "services":
            raise ConfigError(name, "services are a list: set them in the YAML file")
        try:
            value = yaml.safe_load(environ[name])
        except yaml.YAMLError as exc:
            raise ConfigError(name, f"not a YAML value: {environ[name]!r}") from exc
        result.setdefault(section, {})[key] = value
    return result
