"""Print the README's parameter table from dials.factored_integrate's PHIL (all levels).

Usage: .venv/bin/python scripts/phil_table.py  (paste under "## Parameters").
"""

from __future__ import annotations

from dials_factored.command_line.factored_integrate import phil_scope


def rows(scope, prefix=""):
    for obj in scope.objects:
        name = f"{prefix}{obj.name}"
        if obj.is_scope:
            yield from rows(obj, name + ".")
            continue
        default = " ".join(w.value for w in obj.words) if obj.words else "None"
        text = " ".join((obj.help or "").split()).replace("|", "\\|")
        expert = " (expert)" if (obj.expert_level or 0) >= 1 else ""
        yield f"| `{name}` | {default} | {text}{expert} |"


if __name__ == "__main__":
    print("| parameter | default | meaning |\n|---|---|---|")
    print("\n".join(rows(phil_scope)))
