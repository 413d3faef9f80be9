"""Where a validation failure comes from: the file line, the field path, the environment
variable or the flag, and the value, in one `ConfigError`.
"""

from __future__ import annotations

from collections.abc import Mapping

import yaml
from pydantic import BaseModel, ValidationError

from poller.config.settings import Settings
from poller.config.values import ENV_PREFIX
from poller.errors import ConfigError


def known(model: type[BaseModel]) -> str:
    return ", ".join(model.model_fields)


def config_error(
    exc: ValidationError,
    source: str,
    tree: yaml.Node | None,
    origins: Mapping[tuple[str, str], str],
) -> ConfigError:
    error = exc.errors()[0]
    loc = tuple(str(part) for part in error["loc"])
    dotted = ".".join(loc)
    if error["type"] == "extra_forbidden":
        problem = "unknown key"
        parent = _model_at(loc[:-1])
        if parent is not None:
            problem += f" (known: {known(parent)})"
    else:
        problem = str(error["msg"]).removeprefix("Value error, ")
        shown = error.get("input")
        items = shown if isinstance(shown, list | tuple) else [shown]
        # A message that names the bad item already (`'foo' is not a CIDR`) says it once.
        named = any(repr(item) in problem for item in items)
        if "input" in error and not isinstance(shown, dict) and loc and not named:
            problem += f" (got {shown!r})"
    origin = origins.get((loc[0], loc[1])) if len(loc) >= 2 else None
    if origin == "env":
        where = f"{ENV_PREFIX}{loc[0].upper()}__{loc[1].upper()}"
        if len(loc) > 2:
            where += f" ({dotted})"
    elif origin == "flag":
        where = f"command line ({dotted})"
    else:
        line = _line_of(tree, loc)
        where = f"{source}:{line}: {dotted}" if line else f"{source}: {dotted or 'settings'}"
    return ConfigError(where, problem)


def _model_at(loc: tuple[str, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = Settings
    for part in loc:
        if part.isdigit():
            continue  # an item of a list (services.1): the same model
        field = model.model_fields.get(part)
        annotation = field.annotation if field else None
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            return None
        model = nested[0]
    return model


def _line_of(tree: yaml.Node | None, loc: tuple[str, ...]) -> int | None:
    """The 1-based line of the deepest node of `loc` found in the YAML tree."""
    node, line = tree, None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            found = [(k, v) for k, v in node.value if str(k.value) == part]
            if not found:
                break
            key_node, node = found[-1]
            line = key_node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
            line = node.start_mark.line + 1
        else:
            break
    return line
