"""The layering of the code, proven from the source: a static walk of every import (ast, no module is run).

aisemble/ is the shared library and knows nothing of the services, the gateway or the composition roots;
a service knows no other service; a backend never reaches grpc, not even through the library; the gateway
never loads a model. Files stay under 500 lines, packages and modules open with a docstring.
"""

from __future__ import annotations

import ast
import functools
import re
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GEN = ROOT / "gen"
LAYERS = ("aisemble", "services", "gateway", "facade", "entrypoints")
#: What the shared library must never name, by import or by a module path in a string.
ABOVE_THE_LIBRARY = ("services", "gateway", "facade", "entrypoints")
#: Importing any of these (or a submodule) is importing grpc.
GRPC_MODULES = ("grpc", "grpc_health", "grpc_reflection", "grpc_status")
MAX_LINES = 500
#: A string that is a module path (or an entry-point target) into the layers above the library.
MODULE_PATH_LITERAL = re.compile(r"^(?:services|gateway|facade|entrypoints)\.[A-Za-z0-9_.]*(?::[A-Za-z0-9_.]*)?$")


@dataclass(frozen=True)
class Import:
    """One import statement's target, made absolute."""

    module: str
    line: int
    text: str
    #: `from a import b` names a.b, which is a module only if such a file exists (else b is an attribute).
    maybe_attribute: bool = False


@dataclass(frozen=True)
class Module:
    """One first-party source file."""

    name: str
    path: Path
    tree: ast.Module
    imports: tuple[Import, ...]

    @property
    def where(self) -> str:
        """The file, relative to the repository root."""
        return self.path.relative_to(ROOT).as_posix()


def _module_name(path: Path, base: Path) -> tuple[str, bool]:
    """(dotted name, is a package) of a .py file under base."""
    parts = list(path.relative_to(base).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def _is_import_call(node: ast.Call) -> bool:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id in ("__import__", "import_module")
    return isinstance(func, ast.Attribute) and func.attr == "import_module"


def imports_of(tree: ast.Module, module: str, is_package: bool) -> Iterator[Import]:
    """Every import anywhere in a module (top level, functions, `if TYPE_CHECKING:`), relative ones made absolute,
    and importlib.import_module / __import__ calls with a literal name."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(alias.name, node.lineno, f"import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".") if package else []
                parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
                base = ".".join([*parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            names = ", ".join(alias.name for alias in node.names)
            text = f"from {'.' * node.level}{node.module or ''} import {names}"
            if base:
                yield Import(base, node.lineno, text)
            for alias in node.names:
                if alias.name != "*":
                    yield Import(f"{base}.{alias.name}" if base else alias.name, node.lineno, text, True)
        elif (
            isinstance(node, ast.Call)
            and _is_import_call(node)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and not node.args[0].value.startswith(".")
        ):
            yield Import(node.args[0].value, node.lineno, f"{ast.unparse(node.func)}({node.args[0].value!r})")


def _top(name: str) -> str:
    return name.partition(".")[0]


def _is_grpc(name: str) -> bool:
    return _top(name) in GRPC_MODULES


def _is_generated(name: str) -> bool:
    """A generated protobuf module (aisemble.<area>.v1.*), found under gen/."""
    path = resolve(name) if _top(name) == "aisemble" else None
    return path is not None and GEN in path.parents


@functools.cache
def resolve(name: str) -> Path | None:
    """The file a first-party module name loads (module.py or package/__init__.py, under the root or gen/),
    the directory of a namespace package, or None when no such module exists."""
    if _top(name) not in LAYERS:
        return None
    parts = name.split(".")
    for base in (ROOT, GEN):
        path = base.joinpath(*parts)
        if path.with_name(path.name + ".py").is_file():
            return path.with_name(path.name + ".py")
        if (path / "__init__.py").is_file():
            return path / "__init__.py"
    for base in (ROOT, GEN):
        if base.joinpath(*parts).is_dir():
            return base.joinpath(*parts)
    return None


@functools.cache
def source_modules() -> dict[str, Module]:
    """Every .py file under aisemble/, services/, gateway/, facade/ and entrypoints/, by module name."""
    modules: dict[str, Module] = {}
    for layer in LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            name, is_package = _module_name(path, ROOT)
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            modules[name] = Module(name, path, tree, tuple(imports_of(tree, name, is_package)))
    return modules


def _first_party_targets(imp: Import) -> list[str]:
    """The first-party modules an import loads: the module and each parent package (import a.b.c runs
    a/__init__.py and a/b/__init__.py too), when they are files; [] for third-party names and attributes."""
    if _top(imp.module) not in LAYERS or (imp.maybe_attribute and resolve(imp.module) is None):
        return []
    parts = imp.module.split(".")
    names = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return [n for n in names if (path := resolve(n)) is not None and path.is_file()]


def _own_packages(module: Module) -> list[str]:
    """The packages whose __init__.py run before a module does (its parents that are files)."""
    parts = module.name.split(".")
    return [n for i in range(1, len(parts)) if (p := resolve(n := ".".join(parts[:i]))) and p.is_file()]


def _chain(parents: dict[str, tuple[str, Import] | None], last: str, start: str) -> str:
    """A -> B -> C, each step with the import that made it."""
    steps: list[str] = []
    node = last
    while (step := parents[node]) is not None:
        previous, imp = step
        steps.append(f"{node} ({source_modules()[previous].where}:{imp.line} `{imp.text}`)")
        node = previous
    first = node if node == start else f"{start} (its package {node})"
    return " -> ".join([first, *reversed(steps)])


def reach(start: Module, forbidden: Callable[[str], bool]) -> dict[str, str]:
    """Follow first-party imports from a module (breadth first, so each path found is a shortest one).

    Returns, for each import statement that brings in a forbidden module, the chain of modules that leads
    from the start to the file holding it: {"file:line `import ...`": "start -> a -> b"}.
    """
    parents: dict[str, tuple[str, Import] | None] = {start.name: None}
    queue = deque([start.name])
    for package in _own_packages(start):
        if package not in parents:
            parents[package] = None
            queue.append(package)
    found: dict[str, str] = {}
    while queue:
        name = queue.popleft()
        module = source_modules().get(name)
        if module is None:  # generated code: a leaf
            continue
        for imp in module.imports:
            targets = _first_party_targets(imp)
            direct = forbidden(imp.module) and not (imp.maybe_attribute and _top(imp.module) in LAYERS)
            if direct or any(forbidden(t) for t in targets):
                found.setdefault(f"{module.where}:{imp.line} `{imp.text}`", _chain(parents, name, start.name))
                continue
            for target in targets:
                if target not in parents:
                    parents[target] = (name, imp)
                    if not _is_generated(target):
                        queue.append(target)
    return found


def _lines(found: dict[str, str]) -> list[str]:
    return [f"{chain} => {site}" for site, chain in sorted(found.items())]


def _area(module: Module) -> str | None:
    parts = module.name.split(".")
    return parts[1] if parts[0] == "services" and len(parts) > 1 else None


def _report(offences: list[str], title: str) -> None:
    if offences:
        pytest.fail(f"{title} ({len(offences)}):\n  " + "\n  ".join(offences), pytrace=False)


def _in_layer(layer: str) -> list[Module]:
    return [m for m in source_modules().values() if _top(m.name) == layer]


# The checker itself: it must see what it claims to see, or every check below would pass vacuously.


def test_the_walker_finds_imports_everywhere_and_makes_relative_ones_absolute():
    source = (
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "import grpc\n"
        "if TYPE_CHECKING:\n"
        "    from services.nlp.types import Encoded\n"
        "def f():\n"
        "    from . import sibling\n"
        "    from ..types import Thing\n"
        "    import importlib\n"
        "    return importlib.import_module('gateway.proxy')\n"
        "class C:\n"
        "    def m(self):\n"
        "        from grpc import aio\n"
    )
    found = {i.module for i in imports_of(ast.parse(source), "services.llm.backends.x", is_package=False)}
    assert {
        "grpc",
        "services.nlp.types",
        "services.llm.backends.sibling",
        "services.llm.types",
        "services.llm.types.Thing",
        "gateway.proxy",
        "grpc.aio",
    } <= found
    package = {i.module for i in imports_of(ast.parse("from . import a\nfrom .b import c\n"), "pkg.sub", True)}
    assert {"pkg.sub.a", "pkg.sub.b", "pkg.sub.b.c"} <= package


def test_module_names_resolve_to_files_in_the_tree_and_in_gen():
    assert resolve("aisemble.errors") == ROOT / "aisemble" / "errors.py"
    assert resolve("services.llm") == ROOT / "services" / "llm" / "__init__.py"
    assert resolve("aisemble.llm.v1.llm_service_pb2") == GEN / "aisemble" / "llm" / "v1" / "llm_service_pb2.py"
    assert resolve("aisemble.errors.AisembleError") is None
    assert resolve("numpy") is None
    assert _is_generated("aisemble.llm.v1.llm_service_pb2") and not _is_generated("aisemble.errors")


def test_the_grpc_walk_sees_grpc_where_it_is():
    server = source_modules()["aisemble.rpc.server"]
    assert any("aisemble/rpc/server.py" in site for site in reach(server, _is_grpc)), "the walk must see grpc here"
    assert any(_is_grpc(i.module) for i in server.imports)


def test_every_first_party_import_resolves():
    """A first-party import naming no file would make the walks below blind to whatever it meant."""
    offences = []
    for module in source_modules().values():
        for imp in module.imports:
            if _top(imp.module) in LAYERS and not imp.maybe_attribute and resolve(imp.module) is None:
                offences.append(f"{module.where}:{imp.line} `{imp.text}`: no module {imp.module}")
    _report(offences, "first-party imports of modules that do not exist")


# The rules.


def test_the_library_names_no_service_gateway_or_entrypoint():
    offences = []
    for module in _in_layer("aisemble"):
        for imp in module.imports:
            if _top(imp.module) in ABOVE_THE_LIBRARY and not imp.maybe_attribute:
                offences.append(f"{module.where}:{imp.line} `{imp.text}`")
        for node in ast.walk(module.tree):  # (an f-string's literal parts are Constants too)
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value.strip()
                if MODULE_PATH_LITERAL.match(text):
                    offences.append(f"{module.where}:{node.lineno} string {text!r} names a module above the library")
    _report(sorted(set(offences)), "aisemble/ (the shared library) depends on the layers above it")


def test_no_service_imports_another_service_the_gateway_or_entrypoints():
    offences = []
    for module in _in_layer("services"):
        area = _area(module)
        for imp in module.imports:
            if imp.maybe_attribute and resolve(imp.module) is None:
                continue
            parts = imp.module.split(".")
            if parts[0] in ("gateway", "entrypoints"):
                offences.append(f"{module.where}:{imp.line} `{imp.text}`: a service imports {parts[0]}")
            elif parts[0] == "services" and len(parts) > 1 and parts[1] != area:
                offences.append(f"{module.where}:{imp.line} `{imp.text}`: services.{area} imports services.{parts[1]}")
    _report(sorted(set(offences)), "services that import another service, the gateway or entrypoints")


def _backends() -> list[Module]:
    return [m for m in _in_layer("services") if m.name.split(".")[2:3] == ["backends"]]


def test_there_are_backends_to_check():
    areas = {_area(m) for m in _backends()}
    assert {"llm", "nlp", "vision"} <= areas, f"backends found only in {areas}"


def test_backends_do_not_reach_grpc():
    """Directly or through first-party modules (their own packages' __init__.py included); a generated
    *_pb2_grpc module is grpc, the other generated modules are not."""

    def forbidden(name: str) -> bool:
        return _is_grpc(name) or (_is_generated(name) and name.endswith("_pb2_grpc"))

    offences = [line for module in _backends() for line in _lines(reach(module, forbidden))]
    _report(offences, "backends that import grpc (chain of imports => the grpc import)")


def test_the_gateway_loads_no_service():
    found: dict[str, str] = {}
    for module in _in_layer("gateway"):
        for site, chain in reach(module, lambda name: _top(name) == "services").items():
            if site not in found or chain.count(" -> ") < found[site].count(" -> "):
                found[site] = chain  # one line per import, by its shortest chain from a gateway module
    _report(_lines(found), "the gateway imports services/ (chain of imports => the import)")


def test_the_facades_are_translators_over_the_gateway():
    """The HTTP facade reaches the mesh only through the gateway's contracts: it imports the library and the
    generated code, never a service, the gateway's internals or an entry point."""
    offences = []
    for module in _in_layer("facade"):
        for imp in module.imports:
            if _top(imp.module) in ("services", "gateway", "entrypoints") and not imp.maybe_attribute:
                offences.append(f"{module.where}:{imp.line} `{imp.text}`")
    _report(offences, "the facade imports a service, the gateway or an entry point")


def test_no_file_is_over_500_lines():
    offences = []
    for module in source_modules().values():
        lines = len(module.path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES:
            offences.append(f"{module.where}: {lines} lines")
    _report(offences, f"files over {MAX_LINES} lines")


def _docstring(tree: ast.Module) -> str | None:
    first = tree.body[0] if tree.body else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        return first.value.value
    return None


def test_every_package_has_an_init_with_a_one_line_docstring_and_every_module_a_docstring():
    offences = []
    if (ROOT / "aisemble" / "__init__.py").exists():
        offences.append("aisemble/__init__.py: aisemble is a namespace package (gen/ holds its other half)")
    packages: set[Path] = set()
    for module in source_modules().values():
        folder = module.path.parent
        while folder != ROOT:  # the folder of every module and every folder above it, up to its layer
            packages.add(folder)
            folder = folder.parent
    for package in sorted(packages - {ROOT / "aisemble"}):
        if not (package / "__init__.py").is_file():
            offences.append(f"{package.relative_to(ROOT).as_posix()}/: no __init__.py")
    for module in source_modules().values():
        docstring = _docstring(module.tree)
        if docstring is None:
            offences.append(f"{module.where}: does not open with a docstring")
        elif module.path.name == "__init__.py" and "\n" in docstring.strip():
            offences.append(f"{module.where}: the package docstring is not one line")
    _report(offences, "packages without an __init__.py, modules without a docstring")
