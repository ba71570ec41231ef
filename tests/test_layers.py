"""The layer rule, checked on the source: imports point down, never up, never sideways between services.

Every module of ``services/privproc`` is parsed with :mod:`ast` and every
import is read: module level, inside functions, under ``if TYPE_CHECKING``
(an annotation that names an upper layer is a dependency too), relative
ones resolved against their package. Each import is an edge from the
importing module's unit to the imported module's unit, both found in
:data:`LAYERS` (longest dotted prefix). An edge fails when it goes to a
higher layer, or between two units of a layer of siblings (the services,
which talk over the network, never through imports). The units also form no
cycle, and nothing below ``runtime`` imports a transport.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "services"
PACKAGE = "privproc"


@dataclass(frozen=True)
class Layer:
    name: str
    units: tuple[str, ...]
    #: Units of this layer may not import one another (a sibling's code is reached over the network).
    siblings: bool = False


#: Bottom to top: wire → crypto → runtime → services → client → cli. A unit may import its own
#: layer's units (unless they are siblings) and any lower layer's; nothing above.
LAYERS: tuple[Layer, ...] = (
    # The package root (its version) and the typed, transport-neutral errors everything raises.
    Layer("base", ("privproc", "privproc.errors")),
    # Wire formats and sans-I/O protocol state machines (ledger entries, session framing,
    # refusal codes, the transparency-log client), plus hpke: OHTTP seals with it.
    Layer("wire", ("privproc.wire",)),
    # Cryptographic schemes (RFC 9474 blind RSA, RFC 9497 VOPRF) and the native RSA operation.
    Layer("crypto", ("privproc.crypto",)),
    # What every process shares: the generated gRPC API (v1), the event registry, the stack
    # document, and runtime (servers, status mapping, mTLS, SQLite, supervised tasks).
    Layer("runtime", ("privproc.v1", "privproc.stackfile", "privproc.events", "privproc.runtime")),
    # Shared trust machinery, lowest first: the transparency ledger and its readers (the
    # ledger and witness services live here too, and import no other service) ...
    Layer("services-ledger", ("privproc.ledger",)),
    # ... then attestation (SEV-SNP, RA-TLS, release admission; the operator's verifier
    # follows the log).
    Layer("services-attestation", ("privproc.attestation",)),
    Layer(
        "services",
        (
            "privproc.acs",
            "privproc.cdn",
            "privproc.gateway",
            "privproc.predictor",
            "privproc.relay",
            # The CVM's log sidecar: its own process, reached over a Unix socket.
            "privproc.logsidecar",
        ),
        siblings=True,
    ),
    Layer("client", ("privproc.client",)),
    # Commands and the local stack. ``privproc ledger ...`` (ledger.tool) is a command: it drives
    # the client's verifier and the release tooling.
    Layer("cli", ("privproc.cli", "privproc.stack", "privproc.__main__", "privproc.ledger.tool")),
)
#: Imports no module below ``runtime`` may make: the sans-I/O layers do not know a transport exists.
TRANSPORTS = ("grpc", "aiohttp", "socket", "ssl", "sqlite3", "http.client", "urllib.request")
_SANS_IO = {"base", "wire", "crypto"}

LAYER_OF = {unit: index for index, layer in enumerate(LAYERS) for unit in layer.units}


def unit_of(module: str) -> str | None:
    """The declared unit ``module`` belongs to (longest dotted prefix; the root only as itself)."""
    best: str | None = None
    for unit in LAYER_OF:
        matches = module == unit or (unit != PACKAGE and module.startswith(unit + "."))
        if matches and (best is None or len(unit) > len(best)):
            best = unit
    return best


@dataclass(frozen=True)
class Import:
    path: Path
    line: int
    source: str  # the importing module
    target: str  # the imported module (or the package a name was taken from)

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _module_name(path: Path, source: Path = SOURCE) -> tuple[str, bool]:
    parts = list(path.relative_to(source).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def _is_module(name: str, source: Path) -> bool:
    base = source.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _generated(path: Path) -> bool:
    return path.parent.name == "v1" and path.stem.endswith(("_pb2", "_pb2_grpc"))


def modules() -> list[Path]:
    return sorted(p for p in (SOURCE / PACKAGE).rglob("*.py") if not _generated(p))


def imports(path: Path, source: Path = SOURCE) -> Iterator[Import]:
    """Every import in ``path`` (a module under ``source``), wherever it appears in the file."""
    module, is_package = _module_name(path, source)
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(path, node.lineno, module, alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                origin = ".".join([*base, *([node.module] if node.module else [])])
            else:
                origin = node.module or ""
            for alias in node.names:
                submodule = f"{origin}.{alias.name}"
                # ``from privproc import events`` depends on privproc.events, not on the root.
                yield Import(
                    path, node.lineno, module, submodule if _is_module(submodule, source) else origin
                )


def violations(found: list[Import]) -> list[str]:
    """Every edge against :data:`LAYERS`, as ``file:line: source -> target (why)``."""
    problems = []
    for edge in found:
        if edge.target != PACKAGE and not edge.target.startswith(PACKAGE + "."):
            continue
        source, target = unit_of(edge.source), unit_of(edge.target)
        if source is None or target is None:
            problems.append(f"{edge.where()}: {edge.source} -> {edge.target} (module not in LAYERS)")
            continue
        if source == target:
            continue
        low, high = LAYERS[LAYER_OF[target]], LAYERS[LAYER_OF[source]]
        if LAYER_OF[target] > LAYER_OF[source]:
            why = f"{high.name} layer imports the {low.name} layer above it"
        elif LAYER_OF[target] == LAYER_OF[source] and high.siblings:
            why = f"sibling {high.name} import each other"
        else:
            continue
        problems.append(f"{edge.where()}: {edge.source} -> {edge.target} ({source} -> {target}: {why})")
    return problems


def _all_imports() -> list[Import]:
    return [edge for path in modules() for edge in imports(path)]


def test_every_module_belongs_to_a_layer() -> None:
    undeclared = [str(p.relative_to(ROOT)) for p in modules() if unit_of(_module_name(p)[0]) is None]
    assert not undeclared, "modules in no layer (declare them in LAYERS):\n" + "\n".join(undeclared)


def test_imports_point_down_the_layers() -> None:
    problems = violations(_all_imports())
    assert not problems, "imports against the layer order:\n" + "\n".join(problems)


def test_the_units_form_no_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for edge in _all_imports():
        source, target = unit_of(edge.source), unit_of(edge.target)
        if source is not None and target is not None and source != target:
            graph.setdefault(source, set()).add(target)
    done: set[str] = set()

    def visit(unit: str, path: tuple[str, ...]) -> None:
        if unit in path:
            raise AssertionError("import cycle: " + " -> ".join((*path[path.index(unit) :], unit)))
        if unit in done:
            return
        for target in sorted(graph.get(unit, ())):
            visit(target, (*path, unit))
        done.add(unit)

    for unit in sorted(graph):
        visit(unit, ())


def test_no_transport_below_runtime() -> None:
    problems = [
        f"{edge.where()}: {edge.source} imports {edge.target}"
        for edge in _all_imports()
        if LAYERS[LAYER_OF[unit_of(edge.source) or PACKAGE]].name in _SANS_IO
        and any(edge.target == t or edge.target.startswith(t + ".") for t in TRANSPORTS)
    ]
    assert not problems, "sans-I/O layers import a transport:\n" + "\n".join(problems)


# --- the checker itself ------------------------------------------------------------------------


def test_a_back_edge_is_reported_with_its_file_and_line() -> None:
    wire = SOURCE / PACKAGE / "wire" / "ohttp.py"
    forged = [
        Import(wire, 7, "privproc.wire.ohttp", "privproc.client.private"),
        Import(wire, 8, "privproc.wire.ohttp", "privproc.crypto.blindrsa"),
        Import(wire, 9, "privproc.gateway.routes", "privproc.relay.policy"),
        Import(wire, 10, "privproc.gateway.routes", "privproc.ledger.publisher"),  # down: fine
    ]
    assert violations(forged) == [
        "services/privproc/wire/ohttp.py:7: privproc.wire.ohttp -> privproc.client.private "
        "(privproc.wire -> privproc.client: wire layer imports the client layer above it)",
        "services/privproc/wire/ohttp.py:8: privproc.wire.ohttp -> privproc.crypto.blindrsa "
        "(privproc.wire -> privproc.crypto: wire layer imports the crypto layer above it)",
        "services/privproc/wire/ohttp.py:9: privproc.gateway.routes -> privproc.relay.policy "
        "(privproc.gateway -> privproc.relay: sibling services import each other)",
    ]


def test_function_local_relative_and_type_checking_imports_are_read(tmp_path: Path) -> None:
    package = tmp_path / "services" / "privproc" / "wire"
    package.mkdir(parents=True)
    module = package / "x.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from privproc.client import private\n"
        "def f() -> None:\n"
        "    from ..gateway import routes\n"
        "    import privproc.cli\n"
    )
    found = [(edge.source, edge.line, edge.target) for edge in imports(module, tmp_path / "services")]
    assert found == [
        ("privproc.wire.x", 1, "typing"),
        ("privproc.wire.x", 3, "privproc.client"),
        ("privproc.wire.x", 5, "privproc.gateway"),
        ("privproc.wire.x", 6, "privproc.cli"),
    ]
