"""Imports run downward: each image's code imports only what its Dockerfile copies into it, the
library folders never import the launchers (scripts/) or the benchmarks, and no two modules import
each other, however indirectly."""
import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIBRARIES = ("artifact", "debugger", "monitor", "serve", "train", "tune", "util")
KIT = (*LIBRARIES, "bench", "scripts")


def kit_imports(path: Path) -> set[str]:
    """The kit's modules that the file imports, wherever in the file the import stands."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from train import export` imports train.export; `from train.config import X`, X.
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in KIT:
                found.add(module_of(name))
    return found


def module_of(name: str) -> str:
    """The module a dotted import name lands in: train.config.TrainConfig -> train.config."""
    parts = name.split(".")
    while parts:
        if (ROOT.joinpath(*parts).with_suffix(".py")).is_file() or \
                (ROOT.joinpath(*parts) / "__init__.py").is_file():
            return ".".join(parts)
        parts.pop()
    raise AssertionError(f"{name} is no module of the kit")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


GRAPH = {module_name(p): kit_imports(p) for folder in KIT for p in (ROOT / folder).glob("*.py")}


def copied_folders(dockerfile: str) -> set[str]:
    text = (ROOT / "docker" / dockerfile).read_text()
    return set(re.findall(r"^COPY (\w+) /opt/program/\1$", text, flags=re.MULTILINE))


@pytest.mark.parametrize("dockerfile", ["train.Dockerfile", "serve.Dockerfile"])
def test_an_image_holds_every_module_its_code_imports(dockerfile):
    folders = copied_folders(dockerfile)
    assert folders, f"no COPY of the kit's folders found in {dockerfile}"
    missing = {module: sorted(m for m in imported if m.split(".")[0] not in folders)
               for module, imported in GRAPH.items() if module.split(".")[0] in folders}
    assert not {m: v for m, v in missing.items() if v}


def test_the_libraries_never_import_the_launchers_or_the_benchmarks():
    upward = {module: sorted(m for m in imported if m.split(".")[0] in ("scripts", "bench"))
              for module, imported in GRAPH.items() if module.split(".")[0] in LIBRARIES}
    assert not {m: v for m, v in upward.items() if v}


def test_no_modules_import_each_other():
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        for imported in sorted(GRAPH.get(module, ())):
            if imported == module:
                continue
            if imported in path:
                cycles.append(path[path.index(imported):] + [imported])
            elif imported not in done:
                visit(imported, path + [imported])
        done.add(module)

    done: set[str] = set()
    for module in sorted(GRAPH):
        if module not in done:
            visit(module, [module])
    assert not cycles
