"""The arrows point down: each layer imports only the layers below it.

Every module under src/hirag_oz is parsed (not imported), so an import inside a function
or under `if TYPE_CHECKING:` counts as much as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "hirag_oz"

# The edge: what serves the operations to HTTP, MCP, the command line and the client.
EDGE = (
    "hirag_oz.api",
    "hirag_oz.cli",
    "hirag_oz.client",
    "hirag_oz.mcp_server",
    "hirag_oz.factory",
    "hirag_oz.service",
    "hirag_oz.handlers",
    "hirag_oz.commands",
    "hirag_oz.archive",
    "hirag_oz.keys",
    "hirag_oz.key_commands",
)
# Layer (a folder of the package) -> packages or modules its modules may not import.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "store": ("hirag_oz.memory", "hirag_oz.context", "hirag_oz.facts", "hirag_oz.vision", *EDGE),
    "facts": ("hirag_oz.memory", "hirag_oz.context", *EDGE),
    "vision": ("hirag_oz.memory", "hirag_oz.context", *EDGE),
    "memory": ("hirag_oz.facts", "hirag_oz.vision", *EDGE),
    "context": ("hirag_oz.facts", "hirag_oz.vision", *EDGE),
    "kernel": (
        "hirag_oz.memory",
        "hirag_oz.context",
        "hirag_oz.facts",
        "hirag_oz.vision",
        "hirag_oz.store.edge",
        "hirag_oz.store.server",
        *EDGE,
    ),
}


def module_name(path: Path, package_dir: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, package_dir: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, module) of every import in the file; `from a import b` gives both `a` and
    `a.b`, since `b` may be a submodule. Relative imports are resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module_name(path, package_dir).split(".")
    if path.name != "__init__.py":
        package.pop()
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                if node.module:
                    base = [*base, *node.module.split(".")]
                module = ".".join(base)
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)
    return found


def is_within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def violations(layer: str) -> list[str]:
    banned = FORBIDDEN[layer]
    out: list[str] = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        reported: set[int] = set()
        for line, module in imported_modules(path):
            if line not in reported and any(is_within(module, p) for p in banned):
                reported.add(line)
                out.append(f"{module_name(path)} (line {line}) imports {module}")
    return out


def test_the_package_is_where_the_test_looks() -> None:
    assert (PACKAGE / "__init__.py").is_file()
    for layer in FORBIDDEN:
        assert any((PACKAGE / layer).rglob("*.py")), layer


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_point_down(layer: str) -> None:
    found = violations(layer)
    assert not found, f"{layer}/ imports what it must not:\n" + "\n".join(found)


def test_the_check_sees_every_form_of_import(tmp_path: Path) -> None:
    """The parser catches plain, from, relative and nested imports."""
    fake = tmp_path / "hirag_oz" / "store"
    fake.mkdir(parents=True)
    source = fake / "bad.py"
    source.write_text(
        "import hirag_oz.memory.clock\n"
        "from hirag_oz import memory\n"
        "from ..context import extractive\n"
        "def f() -> None:\n"
        "    from hirag_oz.store.base import Filter\n"
    )
    modules = [m for _, m in imported_modules(source, tmp_path / "hirag_oz")]
    assert "hirag_oz.memory.clock" in modules
    assert "hirag_oz.memory" in modules
    assert "hirag_oz.context.extractive" in modules
    assert "hirag_oz.store.base.Filter" in modules
