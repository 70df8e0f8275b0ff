"""The waste service's modules import each other in layers: no cycle, even through an import
inside a function or for types only (which hid `service -> api -> service`), and none of them
large. (Cycles elsewhere in the package are import-linter's, in scripts/check.)"""

from __future__ import annotations

import ast
from pathlib import Path

import linli.cloud.waste

PACKAGE = "linli.cloud.waste"
FOLDER = Path(linli.cloud.waste.__file__).parent
MAX_LINES = 530  # "about 500": a module past it is two things


def imports() -> dict[str, set[str]]:
    """Each module of the package -> the package's modules it imports, anywhere in its body."""
    modules = {f"{PACKAGE}.{p.stem}": p for p in FOLDER.glob("*.py") if p.stem != "__init__"}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                found |= {
                    m for m in (node.module, *(f"{node.module}.{a.name}" for a in node.names)) if m in modules
                }
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name in modules}
        graph[name] = found - {name}
    return graph


def reaches(graph: dict[str, set[str]], start: str) -> set[str]:
    """The modules `start` imports, directly or through others."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for target in graph[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    return seen


# The service as the notifier is split: the wiring, the feed, the domain and the HTTP side.
SERVICE = ("service", "feed", "engine", "claims", "held", "faults", "renovation_link", "api", "booking_api")


def test_the_waste_service_s_modules_import_each_other_without_a_cycle() -> None:
    graph = imports()
    assert f"{PACKAGE}.bookings" in graph[f"{PACKAGE}.api"]  # the graph was read
    looped = [name for name in SERVICE if f"{PACKAGE}.{name}" in reaches(graph, f"{PACKAGE}.{name}")]
    assert looped == []
    # The engine knows neither the network nor the HTTP side, nor what wires them: they import it.
    below = reaches(graph, f"{PACKAGE}.engine")
    assert not below & {f"{PACKAGE}.{name}" for name in ("service", "feed", "api", "booking_api")}


def test_no_waste_module_is_past_about_500_lines() -> None:
    sizes = {p.name: len(p.read_text(encoding="utf-8").splitlines()) for p in FOLDER.glob("*.py")}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}
