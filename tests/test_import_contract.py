"""The import contract: which layer may import which (docs/architecture.md).

Read from the source (every ``import``, module level or inside a function, outside
``if TYPE_CHECKING:``), so a lazy import cannot hide a dependency:

* the core (engine, FSA runtime, event catalogue, agent definitions) does no I/O:
  no store, no shell, no sockets, no clock, no network or database library;
* the sans-I/O protocols (VAIC, Realtime, GPT-Live, wire checks, audio formats)
  import neither the store, nor the core engine, nor the shell;
* the read models (``projections/``: live state, call listing, trails, latency,
  inspector views, the DuckDB analytics sync) read the log through the store and
  import no shell, no command line and no network library;
* nothing in the product imports ``fastagent.testing`` (the simulated caller and the
  fake models), except the commands that drive them (``demo``, ``call``).

KNOWN lists the imports that break a rule today, each a named debt; it is empty
(issue 10, point 5), and a new violation fails this test.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("fastagent", "projections")

CORE = {
    "fastagent.core",
    "fastagent.fsa",
    "fastagent.events",
    "fastagent.agent",
    "fastagent.errors",
    "fastagent.models",  # what the core knows about OpenAI's models: a table, no I/O
    "fastagent.status",  # the call's status and its transition table
    "fastagent.personal_data",  # what is personal data (agent definitions' Privacy)
}
PROTOCOLS = {
    "fastagent.vaic",
    "fastagent.realtime",
    "fastagent.live",
    "fastagent.wire",
    "fastagent.audio",
}
# What the core may import besides itself and the standard library's pure parts.
CORE_MAY = {"msgspec"}
IO_MODULES = {
    "asyncio",
    "socket",
    "ssl",
    "sqlite3",
    "subprocess",
    "threading",
    "time",
    "random",
    "uuid",
    "datetime",
    "os",
    "secrets",
}
NETWORK = {"websockets", "openai", "httpx", "fastapi", "starlette", "uvicorn", "mcp"}
STORAGE = {"eventsourcing", "psycopg", "duckdb", "pyarrow"}
SHELL = ("fastagent.service", "fastagent.sockets", "fastagent.tools", "fastagent.store")
READ_MODEL_MAY_NOT = (
    "fastagent.service",
    "fastagent.sockets",
    "fastagent.tools",
    "fastagent.inspector",
    "fastagent.cli",
    "fastagent.analytics_cli",
    "fastagent.service_cli",
)
TESTING_DRIVERS = {"fastagent.service_cli", "fastagent.call_cli"}

# Debts: (importer, imported) pairs that break a rule today (issue 10, point 5 paid
# them all: agent resolution and format negotiation happen outside the core,
# fastagent.admission; privacy settings live apart from the encryption).
KNOWN: set[tuple[str, str]] = set()


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(module: str, path: Path) -> set[str]:
    """Every module ``module`` imports at run time (absolute names)."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.add(prefix)
            # `from fastagent import store` imports the module fastagent.store
            found.update(f"{prefix}.{a.name}" for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


MODULES = _modules()
IMPORTS = {name: imports_of(name, path) for name, path in MODULES.items()}


def _ours(name: str) -> str | None:
    """The FastAgent module ``name`` refers to (a module, or a name in one)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _violations(module: str, allowed: Callable[[str], str | None]) -> list[str]:
    out = []
    for name in sorted(IMPORTS[module]):
        reason = allowed(name)
        ours = _ours(name)
        if reason and (module, ours or name) not in KNOWN:
            out.append(f"{module} imports {name}: {reason}")
    return out


def _core_rule(name: str) -> str | None:
    top = name.split(".")[0]
    ours = _ours(name)
    if ours in PACKAGES:
        return None  # `from fastagent import events`: the package itself is empty
    if ours is not None:
        return None if ours in CORE else "the core imports only the core"
    if top in ("fastagent", "projections"):
        return None  # a name re-exported from a core package
    if top in IO_MODULES or top in NETWORK or top in STORAGE:
        return "the core does no I/O and reads no clock"
    if top in CORE_MAY or top in ("__future__", "collections", "dataclasses", "typing"):
        return None
    if top in ("json", "re", "abc", "enum", "functools", "itertools", "math", "hashlib"):
        return None
    return "not a library the core may use"


def _protocol_rule(name: str) -> str | None:
    ours = _ours(name)
    if ours is not None and (ours.startswith(SHELL) or ours == "fastagent.core"):
        return "a protocol imports no store, core engine or shell"
    if name.split(".")[0] in NETWORK | STORAGE | {"asyncio", "socket", "sqlite3"}:
        return "a protocol is sans-I/O"
    return None


def _read_model_rule(name: str) -> str | None:
    ours = _ours(name)
    if ours is not None and ours.startswith(READ_MODEL_MAY_NOT):
        return "a read model imports no shell and no command line"
    if name.split(".")[0] in NETWORK:
        return "a read model opens no socket"
    return None


def _testing_rule(name: str) -> str | None:
    ours = _ours(name)
    if ours is not None and ours.startswith("fastagent.testing"):
        return "the product does not import fastagent.testing"
    return None


@pytest.mark.parametrize("module", sorted(CORE))
def test_the_core_does_no_io(module: str) -> None:
    assert _violations(module, _core_rule) == []


@pytest.mark.parametrize("module", sorted(PROTOCOLS))
def test_protocols_are_sans_io(module: str) -> None:
    assert _violations(module, _protocol_rule) == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("projections")))
def test_read_models_read_the_log_only(module: str) -> None:
    assert _violations(module, _read_model_rule) == []


def test_the_read_models_live_in_projections() -> None:
    """The DuckDB sync and the call listing are read models like the others."""
    assert {"projections.analytics", "projections.calls", "projections.live"} <= set(MODULES)
    assert "fastagent.analytics" not in MODULES


def test_the_product_does_not_import_the_test_kit() -> None:
    product = [
        m for m in MODULES if not m.startswith("fastagent.testing") and m not in TESTING_DRIVERS
    ]
    assert [v for m in product for v in _violations(m, _testing_rule)] == []


def test_known_debts_are_still_debts() -> None:
    """A debt paid off leaves KNOWN, so the contract tightens as the code does."""
    for importer, imported in sorted(KNOWN):
        assert any(_ours(n) == imported for n in IMPORTS[importer]), (importer, imported)


def test_the_scan_sees_lazy_imports() -> None:
    """The reader finds an import inside a function (what a lazy import looks like)."""
    assert any(n.startswith("fastagent.testing") for n in IMPORTS["fastagent.service_cli"])
