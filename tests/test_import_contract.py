"""The import contract: which layer may import which (docs/architecture.md).

Read from the source (every ``import``, module level or inside a function, outside
``if TYPE_CHECKING:``), so a lazy import cannot hide a dependency.  Every module of
the product is placed in exactly one layer (:data:`LAYERS`; a new module fails
:func:`test_every_module_has_a_layer` until it is placed), and:

* the core (engine, FSA runtime, event catalogue, agent definitions) does no I/O:
  no store, no shell, no sockets, no clock, no network or database library;
* the sans-I/O protocols (VAIC, Realtime, GPT-Live, wire checks, audio formats)
  import only what is on an allow-list: the standard library's pure parts
  (:data:`PURE_STDLIB`: no ``os``, ``time``, ``threading``, ``subprocess``,
  ``socket``, ``asyncio``...), msgspec, numpy/soxr (audio.py's resampler: pure
  computation), the event catalogue, ``fastagent.wire`` / ``audio`` / ``errors`` /
  ``models`` and each other -- so never the store, the core engine or the shell;
* nothing below the shell (core, protocols, admission, store, replay, read models)
  imports the shell, the command line or the test kit;
* the read models (``projections/``: live state, call listing, trails, latency,
  inspector views, the DuckDB analytics sync) read the log through the store and
  import no shell, no command line and no network library;
* nothing in the product imports ``fastagent.testing`` (the simulated caller and
  the fake models) except the commands that drive it, and only lazily, inside the
  functions named in :data:`TESTING_DRIVERS` (so ``fastagent serve`` never loads
  the kit): the ``demo`` command, and ``fastagent call URL``.  The latter is a
  named exception, kept on purpose: it *is* the simulated caller pointed at a
  running deployment (an operator's smoke test, docs/architecture.md), so moving
  what it needs out of the kit would move the kit itself into the product.

The shell (:data:`SHELL`), decided by what each module does: everything that
serves calls or the service's endpoints at run time -- ``service/`` (app, call
runner, caller and model links, including ``service/live_link.py``), the socket
lanes (``sockets``), MCP tool clients (``tools``), the resume cache
(``checkpoints``: restores a call's engine from the store for a resume; used by
``service/ownership`` only), telemetry (``observe``), the SIGTERM drain
(``lifecycle``), the read credential (``access``), log redaction (``redact``),
FastAgent's MCP server (``mcp_server``) and the inspector's web app
(``inspector``).  Not the shell: ``admission`` and the agent registry (``agents``)
settle a ``session.initiate`` for the core, for the shell and for replay alike, and
open no socket; ``replay`` runs today's core over a recorded log (a command and a
test tool, no service state).

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
# What a protocol may import of FastAgent: the catalogue and the pure helpers.
PROTOCOL_MAY = PROTOCOLS | {
    "fastagent.events",
    "fastagent.errors",
    "fastagent.models",
}
# Third-party libraries a protocol may use: parsing, and audio.py's resampler.
PROTOCOL_LIBS = {"msgspec", "numpy", "soxr"}
# The standard library's pure parts (no I/O, no clock, no randomness, no threads).
PURE_STDLIB = {
    "__future__",
    "abc",
    "base64",
    "binascii",
    "collections",
    "dataclasses",
    "enum",
    "functools",
    "hashlib",
    "itertools",
    "json",
    "math",
    "operator",
    "re",
    "string",
    "struct",
    "typing",
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
SHELL = (
    "fastagent.service",
    "fastagent.sockets",
    "fastagent.tools",
    "fastagent.checkpoints",
    "fastagent.observe",
    "fastagent.lifecycle",
    "fastagent.access",
    "fastagent.redact",
    "fastagent.mcp_server",
    "fastagent.inspector",
)
COMMANDS = (
    "fastagent.__main__",
    "fastagent.cli",
    "fastagent.cli_common",
    "fastagent.console",
    "fastagent.call_printer",
    "fastagent.service_cli",
    "fastagent.call_cli",
    "fastagent.analytics_cli",
    "fastagent.ops_cli",
    "fastagent.scaffold",
)
READ_MODEL_MAY_NOT = (*SHELL, *COMMANDS)
# The layers, bottom up; every module of the product is in exactly one.
LAYERS: dict[str, tuple[str, ...]] = {
    "core": tuple(sorted(CORE)),
    "protocols": tuple(sorted(PROTOCOLS)),
    "admission": ("fastagent.admission", "fastagent.agents"),
    "store": ("fastagent.store", "fastagent.privacy"),  # privacy: at the store's seam
    "replay": ("fastagent.replay",),
    "read models": ("projections", "fastagent.masking"),  # masking: what views show
    "shell": SHELL,
    "commands": COMMANDS,
    "test kit": ("fastagent.testing",),
    "examples": ("fastagent.examples",),  # example agents and their demo backends
}
BELOW_THE_SHELL = ("core", "protocols", "admission", "store", "replay", "read models")
# The only places the product imports fastagent.testing: (module, function) pairs,
# each a command that drives the simulated caller or the fake models.
TESTING_DRIVERS: dict[str, set[str]] = {
    # fastagent demo: the service, the fake model and the simulated caller in one process
    "fastagent.service_cli": {"DemoPlan.__init__", "run_demo", "demo"},
    # fastagent call URL: the simulated caller against a running deployment
    "fastagent.call_cli": {"call", "_call", "_speech_ms"},
}

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


def scoped_imports_of(module: str, path: Path) -> set[tuple[str, str]]:
    """Every module ``module`` imports at run time (absolute names), with where:
    the qualified name of the function (or class body) the import is in, "" at
    module level."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[tuple[str, str]] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def visit(node: ast.AST, scope: str) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child, scope)
            return
        if isinstance(node, ast.Import):
            found.update((a.name, scope) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.add((prefix, scope))
            # `from fastagent import store` imports the module fastagent.store
            found.update((f"{prefix}.{a.name}", scope) for a in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            scope = f"{scope}.{node.name}" if scope else node.name
        for child in ast.iter_child_nodes(node):
            visit(child, scope)

    visit(tree, "")
    return found


def imports_of(module: str, path: Path) -> set[str]:
    """Every module ``module`` imports at run time (absolute names)."""
    return {name for name, _ in scoped_imports_of(module, path)}


MODULES = _modules()
SCOPED = {name: scoped_imports_of(name, path) for name, path in MODULES.items()}
IMPORTS = {name: {n for n, _ in found} for name, found in SCOPED.items()}


def _in(module: str, prefixes: tuple[str, ...] | set[str]) -> bool:
    """``module`` is one of ``prefixes`` or inside one of them (a package)."""
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _layer(module: str) -> list[str]:
    return [layer for layer, prefixes in LAYERS.items() if _in(module, prefixes)]


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
    top = name.split(".")[0]
    ours = _ours(name)
    if ours in PACKAGES:
        return None  # `from fastagent import events`: the package itself is empty
    if ours is not None:
        return None if ours in PROTOCOL_MAY else "a protocol imports no store, core or shell"
    if top in ("fastagent", "projections"):
        return "not a module a protocol may import"
    if top in PURE_STDLIB or top in PROTOCOL_LIBS:
        return None
    return "a protocol is sans-I/O: pure stdlib, msgspec and the catalogue only"


def _below_the_shell_rule(name: str) -> str | None:
    ours = _ours(name)
    if ours is not None and _in(ours, (*SHELL, *COMMANDS, "fastagent.testing")):
        return "nothing below the shell imports the shell, a command or the test kit"
    return None


def _read_model_rule(name: str) -> str | None:
    ours = _ours(name)
    if ours is not None and _in(ours, READ_MODEL_MAY_NOT):
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
    """Only the demo and call commands import fastagent.testing, and only inside
    the functions named in TESTING_DRIVERS (never at module level)."""
    out = []
    for module, found in sorted(SCOPED.items()):
        if _in(module, ("fastagent.testing",)):
            continue
        drivers = TESTING_DRIVERS.get(module, set())
        for name, scope in sorted(found):
            if _testing_rule(name) and scope not in drivers:
                out.append(f"{module} imports {name} in {scope or 'the module'}")
    assert out == []


def test_the_test_kit_drivers_are_real() -> None:
    """Each named exception still imports the kit (a paid-off one leaves the list)."""
    for module, functions in TESTING_DRIVERS.items():
        used = {scope for name, scope in SCOPED[module] if _testing_rule(name)}
        assert used == functions, module


def test_every_module_has_a_layer() -> None:
    """The layout shows the architecture: each module is in exactly one layer."""
    placed = {m: _layer(m) for m in MODULES if m not in PACKAGES}
    assert {m: layers for m, layers in placed.items() if len(layers) != 1} == {}


@pytest.mark.parametrize(
    "module", sorted(m for m in MODULES if _layer(m) and _layer(m)[0] in BELOW_THE_SHELL)
)
def test_nothing_below_the_shell_imports_it(module: str) -> None:
    assert _violations(module, _below_the_shell_rule) == []


def test_the_model_links_are_shell_code() -> None:
    """Both model links live in the shell; the pure translation they use lives in
    the sans-I/O protocol modules."""
    assert "fastagent.live_link" not in MODULES
    assert {"fastagent.service.live_link", "fastagent.service.realtime_link"} <= set(MODULES)
    wanted = {
        "fastagent.realtime": {"input_of", "decision_frame", "configure_frames", "answer_of"},
        "fastagent.live": {"input_of", "backend_input_of", "decision_frames", "configure_frame"},
    }
    for module, functions in wanted.items():
        tree = ast.parse(MODULES[module].read_text())
        defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert functions <= defined, module


def test_known_debts_are_still_debts() -> None:
    """A debt paid off leaves KNOWN, so the contract tightens as the code does."""
    for importer, imported in sorted(KNOWN):
        assert any(_ours(n) == imported for n in IMPORTS[importer]), (importer, imported)


def test_the_scan_sees_lazy_imports() -> None:
    """The reader finds an import inside a function (what a lazy import looks like)."""
    assert any(n.startswith("fastagent.testing") for n in IMPORTS["fastagent.service_cli"])


def test_no_asyncio_wait_for_in_the_product() -> None:
    """Python 3.11's ``asyncio.wait_for`` swallows an outer cancellation when the
    awaited future completes in the same loop pass (cpython gh-86296; fixed by 3.12's
    rewrite on ``asyncio.timeout``): a call task cancelled at that moment runs on.
    The product bounds waits with ``async with asyncio.timeout(...)`` instead."""
    found = []
    for module, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr == "wait_for"
                and isinstance(node.value, ast.Name)
                and node.value.id == "asyncio"
            ):
                found.append(f"{module}:{node.lineno}")
    assert found == [], found
