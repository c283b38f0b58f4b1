"""The floors of the house (README, Layout): an import only runs down, imports inside functions included, and no two
modules import each other."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOORS = {"utils": 0, "models": 1, "losses": 1, "schedulers": 1, "transforms": 1, "modes": 1, "data": 2, "tasks": 3,
          "trainer": 4, "analysis": 5, "selection": 5, "tracking": 6, "campaign": 7}
ENTRY = 8  # the entry scripts at the top level


def project_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of a project module in `path`, wherever it stands in the file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        out += [(node.lineno, name) for name in names if name.split(".")[0] in FLOORS]
    return out


def source_files() -> list[Path]:
    return sorted(p for p in ROOT.glob("*.py")) + sorted(p for folder in FLOORS for p in (ROOT / folder).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_imports_only_run_down():
    wrong = []
    for path in source_files():
        rel = path.relative_to(ROOT)
        here = rel.parts[0] if len(rel.parts) > 1 else None
        level = FLOORS[here] if here else ENTRY
        for line, name in project_imports(path):
            top = name.split(".")[0]
            if here is None and top not in FLOORS:
                wrong.append(f"{rel}:{line} imports the entry script {name}")
            elif top != here and FLOORS[top] >= level:
                wrong.append(f"{rel}:{line} imports {name} (floor {FLOORS[top]}) from floor {level}")
    assert not wrong, "\n".join(wrong)


def test_no_two_modules_import_each_other():
    graph = {module_name(p): {name for _, name in project_imports(p)} for p in source_files()}
    pairs = sorted({tuple(sorted((a, b))) for a, targets in graph.items() for b in targets
                    if a != b and a in graph.get(b, ())})
    assert not pairs, pairs


def test_entry_scripts_import_no_other_entry_script():
    scripts = {p.stem for p in ROOT.glob("*.py")}
    wrong = [f"{p.name} imports {name}" for p in ROOT.glob("*.py") for _, name in _all_imports(p) if name in scripts]
    assert not wrong, wrong


def _all_imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
    return out
