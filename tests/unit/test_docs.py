"""The documentation says what the code has: every setting (docs/CONFIGURATION.md,
generated from the settings and checked for staleness here), every exit code, every
module (docs/ARCHITECTURE.md), and the README's promises to a newcomer."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from pydantic import BaseModel

from poller import cli
from poller.config import Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
CONFIGURATION = (ROOT / "docs" / "CONFIGURATION.md").read_text()
ARCHITECTURE = (ROOT / "docs" / "ARCHITECTURE.md").read_text()


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
    documented = set(re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \|", CONFIGURATION, re.MULTILINE))
    assert set(settings_keys()) <= documented
    assert documented - set(settings_keys()) == set(), "documented settings that do not exist"


def test_the_config_reference_is_what_the_settings_say() -> None:
    """docs/CONFIGURATION.md is generated: a description or default changed in the code
    and not regenerated (`make docs`) fails here."""
    spec = importlib.util.spec_from_file_location(
        "reference", ROOT / "scripts" / "config_reference.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.reference() == CONFIGURATION, "docs/CONFIGURATION.md is stale: run `make docs`"


def test_every_exit_code_is_documented() -> None:
    codes = {v for name, v in vars(cli).items() if name.startswith("EXIT_") and isinstance(v, int)}
    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", README, re.MULTILINE)}
    assert codes == documented


def test_readme_starts_with_the_two_commands() -> None:
    first_block = README.split("```sh", 1)[1].split("```", 1)[0]
    assert "make demo" in first_block
    assert "make test" in first_block


def test_the_readme_is_a_front_door_with_an_index_of_the_manual() -> None:
    lines = README.splitlines()
    assert len(lines) <= 220
    assert lines.index("## Install") < 60
    linked = set(re.findall(r"\]\(docs/([A-Z]+\.md)\)", README))
    pages = {path.name for path in (ROOT / "docs").glob("*.md")}
    assert linked == pages, "every docs/ page is in the README's index, and only those"


def test_every_relative_link_in_the_docs_leads_to_a_file() -> None:
    broken = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if (
                not target.startswith(("http://", "https://"))
                and not (page.parent / target).exists()
            ):
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert broken == []


def test_no_internal_issue_tags_in_the_docs_and_benchmarks() -> None:
    tagged = [
        f"{path.relative_to(ROOT)}: {line.strip()}"
        for path in [*(ROOT / "docs").glob("*.md"), *(ROOT / "bench").glob("*.py")]
        for line in path.read_text().splitlines()
        if re.search(r"\(issues? [0-9]", line)
    ]
    assert tagged == []


def test_every_module_is_in_the_layout_table() -> None:
    poller = Path(__file__).resolve().parents[2] / "poller"
    modules = {
        str(path.relative_to(poller).with_suffix(""))
        for path in poller.rglob("*.py")
        if path.name not in ("__init__.py", "__main__.py")
    }
    rows = re.findall(r"^\| (`[^|]+`) \|", ARCHITECTURE.split("## Modules", 1)[1], re.MULTILINE)
    named = {name for row in rows for name in re.findall(r"`([a-z_/]+)`", row)}
    assert modules - named == set(), "modules missing from docs/ARCHITECTURE.md's table"
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
