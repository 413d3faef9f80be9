"""The mutation score per module, from the last `mutmut run` (make mutate).

Reads mutmut's result files (mutants/**/*.meta), prints a table of killed and surviving
mutants per module and writes it into docs/TESTING.md between its markers, so the
numbers there are the ones the last run produced. Survivors are listed by name for
`mutmut show <name>`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mutmut.stats import status_by_exit_code

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "TESTING.md"
BEGIN, END = "<!-- mutation:begin -->", "<!-- mutation:end -->"
# What mutmut's exit codes mean (mutmut.stats.status_by_exit_code): a mutant a test
# failed on, that hung, or that the type checker refused is caught; one no unit test
# reaches ("no tests") counts as a survivor, as it is one.
CAUGHT = {"killed", "timeout", "caught by type check"}


def scores(root: Path) -> dict[str, tuple[int, list[str]]]:
    """module -> (killed, survivor names), over the mutants mutmut ran."""
    result: dict[str, tuple[int, list[str]]] = {}
    for meta in sorted((root / "mutants").rglob("*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        ran = {name: code for name, code in codes.items() if code is not None}
        if not ran:
            continue
        module = meta.relative_to(root / "mutants").as_posix().removesuffix(".meta")
        status = {name: status_by_exit_code[code] for name, code in ran.items()}
        killed = sum(1 for verdict in status.values() if verdict in CAUGHT)
        survivors = sorted(name for name, verdict in status.items() if verdict not in CAUGHT)
        result[module] = (killed, survivors)
        result[module + "#total"] = (len(ran), [])
    return result


def table(root: Path) -> str:
    found = scores(root)
    modules = [name for name in found if not name.endswith("#total")]
    if not modules:
        raise SystemExit("no mutmut results under mutants/: run `make mutate` first")
    lines = ["| module | mutants | killed | score |", "|---|---:|---:|---:|"]
    all_killed = all_total = 0
    for module in modules:
        killed, _ = found[module]
        total = found[module + "#total"][0]
        all_killed, all_total = all_killed + killed, all_total + total
        lines.append(f"| `{module}` | {total} | {killed} | {100 * killed / total:.0f} % |")
    lines.append(f"| **all** | {all_total} | {all_killed} | {100 * all_killed / all_total:.0f} % |")
    return "\n".join(lines)


def survivors(root: Path) -> list[str]:
    return [n for module, (_, names) in scores(root).items() for n in names if "#" not in module]


def main() -> None:
    text = table(ROOT)
    print(text)
    left = survivors(ROOT)
    print(f"\n{len(left)} survivors (mutmut show <name>):", *left, sep="\n  ")
    if "--no-write" in sys.argv:
        return
    doc = DOC.read_text()
    head, _, rest = doc.partition(BEGIN)
    _, _, tail = rest.partition(END)
    DOC.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


if __name__ == "__main__":
    main()
