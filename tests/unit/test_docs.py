"""The README documents every setting and every exit code the code has."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from poller import cli
from poller.config import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def settings_keys(model: type[BaseModel] = Settings, prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        nested = field.annotation
        items = getattr(nested, "__args__", ())  # services: a tuple of ServiceSettings
        if items and isinstance(items[0], type) and issubclass(items[0], BaseModel):
            nested = items[0]
        if isinstance(nested, type) and issubclass(nested, BaseModel) and not prefix:
            keys += settings_keys(nested, f"{name}.")
        else:
            keys.append(prefix + name)
    return keys


def test_every_setting_is_in_the_config_reference() -> None:
    documented = set(re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \|", README, re.MULTILINE))
    assert set(settings_keys()) <= documented
    assert documented - set(settings_keys()) == set(), "README documents settings that do not exist"


def test_every_exit_code_is_documented() -> None:
    codes = {v for name, v in vars(cli).items() if name.startswith("EXIT_") and isinstance(v, int)}
    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", README, re.MULTILINE)}
    assert codes == documented


def test_readme_starts_with_the_two_commands() -> None:
    first_block = README.split("```sh", 1)[1].split("```", 1)[0]
    assert "make demo" in first_block
    assert "make test" in first_block


def test_every_module_is_in_the_layout_table() -> None:
    poller = Path(__file__).resolve().parents[2] / "poller"
    modules = {
        str(path.relative_to(poller).with_suffix(""))
        for path in poller.rglob("*.py")
        if path.name not in ("__init__.py", "__main__.py")
    }
    rows = re.findall(r"^\| (`[^|]+`) \|", README.split("## Development", 1)[1], re.MULTILINE)
    named = {name for row in rows for name in re.findall(r"`([a-z_/]+)`", row)}
    assert modules - named == set(), "modules missing from the README's layout table"
    assert {m for m in named if "/" not in m or not m.endswith("/")} - modules == set()


def test_the_layers_contract_names_every_module_the_layout_table_lists() -> None:
    """import-linter checks only what its contract names: a module left out of the layers
    could import anything. Every module is in a layer (itself, or its package as a whole,
    like `poller.config`), and every layer names a module that exists."""
    import tomllib

    root = Path(__file__).resolve().parents[2]
    project = tomllib.loads((root / "pyproject.toml").read_text())
    contracts = project["tool"]["importlinter"]["contracts"]
    layers = next(c["layers"] for c in contracts if c["type"] == "layers")
    named = {name.strip() for layer in layers for name in layer.split("|")}
    modules = {
        "poller." + str(path.relative_to(root / "poller").with_suffix("")).replace("/", ".")
        for path in (root / "poller").rglob("*.py")
        if path.name not in ("__init__.py", "__main__.py")
    }
    uncovered = {m for m in modules if not any(m == n or m.startswith(n + ".") for n in named)}
    assert uncovered == set(), "modules no import-linter layer names"
    packages = {m.rsplit(".", 1)[0] for m in modules}
    assert named - modules - packages == set(), "layers naming modules that do not exist"
