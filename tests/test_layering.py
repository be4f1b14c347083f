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
    {"pipeline", "__init__", "parallel", "plugins", "metrics"},
    {"formats", "transports"},
    {"options", "stages", "schema_file", "pacing"},
    {"codec"},
    {"address", "config", "errors", "message", "synth"},
]
ONLY_IN = {
    "click": {"cli.py"},
    "confluent_kafka": {"transports/kafka.py", "codec/registry.py"},
    "lxml": {"formats/voevent.py"},
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
