"""The layers of docs/architecture.md: imports point downward only, heavy imports stay put."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

KCP = Path(__file__).resolve().parent.parent / "kcp"

# A module may import from its own layer and the layers after it in this list, never before.
LAYERS = [
    {"cli", "__main__"},
    {"__init__", "plan"},
    {"pipeline", "parallel", "group", "plugins", "metrics"},
    {"formats", "transports"},
    {"options", "stages", "schema_file", "pacing"},
    {"where"},
    {"codec", "environment"},
    {"address", "config", "contracts", "errors", "message", "synth", "times"},
]
ONLY_IN = {
    "click": {"cli.py"},
    "confluent_kafka": {"transports/kafka/__init__.py", "transports/kafka/client.py",
                        "transports/kafka/admin.py", "transports/kafka/offsets.py",
                        "transports/kafka/heartbeat.py",
                        "codec/registry.py"},
    "lxml": {"formats/voevent/packet.py"},
    "astropy": {"formats/fits.py"},
    "pyarrow": {"formats/parquet.py"},
}


def layer_of(part: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if part in names)


def imports(path: Path) -> list[tuple[str, int]]:
    """(imported module, level) of every import in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.module or "", node.level))
    return found


def resolve(path: Path, module: str, level: int) -> str | None:
    """The top-level kcp part an import reaches, or None for third-party modules."""
    if level == 0:
        return module.split(".")[1] if module.startswith("kcp.") else None
    package = path.relative_to(KCP).parent.parts
    base = list(package[: len(package) - (level - 1)])
    target = base + (module.split(".") if module else [])
    return target[0] if target else "__init__"


def test_imports_point_downward_only():
    for path in KCP.rglob("*.py"):
        here = path.relative_to(KCP).parts[0].removesuffix(".py")
        for module, level in imports(path):
            target = resolve(path, module, level)
            if target is None or target == here:
                continue
            assert layer_of(target) >= layer_of(here), f"{path}: imports {target} from {here}"


def test_heavy_libraries_stay_in_their_modules():
    for path in KCP.rglob("*.py"):
        name = str(path.relative_to(KCP))
        for module, level in imports(path):
            top = module.split(".")[0]
            if level == 0 and top in ONLY_IN:
                assert name in ONLY_IN[top], f"{name} imports {top}"


def test_help_does_not_load_kafka_or_fits():
    code = ("import sys; from kcp.cli import main\n"
            "try: main(['--help'])\nexcept SystemExit: pass\n"
            "print(sorted(m for m in ('confluent_kafka', 'astropy', 'lxml', 'pyarrow')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(KCP).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["kcp", *parts])


def _imported_modules(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names imported from it) of each kcp import in a file, as absolute names."""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package.pop()
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.startswith("kcp"):
                found.append((module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names if alias.name.startswith("kcp")]
    return found


def test_no_import_cycles():
    """Module by module (lazy imports inside functions included), kcp's imports form no
    circle: each module can be understood after the ones it imports."""
    modules = {_module_name(p): p for p in KCP.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for module, names in _imported_modules(path):
            # "from . import avro" imports the submodule; "from .x import y" the module x
            targets = [f"{module}.{n}" for n in names if f"{module}.{n}" in modules] or [module]
            graph[name].update(t for t in targets if t in modules and t != name)
    # A package's __init__ importing its own submodules is how a package is built, not a
    # circle: only edges from a module back to a package it is not part of count.
    for name in graph:
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycle = [*trail[trail.index(target):], target] if target in trail else [
                    node, target]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, [*trail, target])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_no_private_imports_across_modules():
    """A name with a leading underscore is private to its module: no other module imports it."""
    for path in KCP.rglob("*.py"):
        for module, names in _imported_modules(path):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            assert not private, f"{path.relative_to(KCP)} imports {private} from {module}"
