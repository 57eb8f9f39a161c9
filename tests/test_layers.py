"""The folders are the layers: each module imports only its own layer or the ones below it.

Read from the source with ``ast``, every import counts: at the top, inside a function (a late
import is still a dependency) and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import tracedpolicy

PACKAGE = Path(tracedpolicy.__file__).parent

#: Bottom to top. A module may import its own layer and those before it.
LAYERS = ("base", "records", "health", "exporters", "sources", "entry")

#: The modules left at the top of the package, by the layer they belong to: ``_launcher`` runs
#: first of all and imports nothing; ``__main__`` and ``instrumentor`` are entry points (the
#: latter the documented path); ``__init__``, the public names, is used by the entry points (the
#: demo and the pytest plugin use tracedpolicy as its users do) and by nothing below them.
TOP = {"_launcher": "base", "__main__": "entry", "instrumentor": "entry", "__init__": "entry"}


def layer(module: str) -> str:
    """The layer of a ``tracedpolicy...`` dotted name."""
    name = [*module.split("."), "__init__"][1]
    return TOP.get(name, name)


def rank(module: str) -> int:
    return LAYERS.index(layer(module))


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if "_bootstrap" in parts:  # a sitecustomize for any Python, which imports nothing of ours
            continue
        yield ".".join(["tracedpolicy", *parts]), path


def imported(path: Path) -> Iterator[tuple[int, str]]:
    """Each tracedpolicy module ``path`` imports (``from a import b``: ``a.b`` if that is a
    module, else ``a``), with its line."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "tracedpolicy":
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tracedpolicy"):
            assert node.level == 0, f"{path}: a relative import"
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                is_module = (PACKAGE.parent / name.replace(".", "/")).with_suffix(".py").exists()
                yield node.lineno, name if is_module else str(node.module)


LAYERED = [(name, path) for name, path in modules() if not name.endswith("__init__")]


@pytest.mark.parametrize(("name", "path"), LAYERED, ids=[name for name, _ in LAYERED])
def test_a_module_imports_only_its_layer_and_those_below(name: str, path: Path) -> None:
    upward = [
        f"line {line}: {target} ({layer(target)})"
        for line, target in imported(path)
        if rank(target) > rank(name)
    ]
    assert not upward, f"{name} ({layer(name)}) imports up a layer: {upward}"


def test_every_module_is_in_a_layer() -> None:
    for name, _ in modules():
        assert layer(name) in LAYERS, name


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_says_what_it_holds_and_imports_nothing(layer: str) -> None:
    """Importing ``tracedpolicy.records`` must load nothing more (start-up stays cheap)."""
    tree = ast.parse((PACKAGE / layer / "__init__.py").read_text(encoding="utf-8"))
    docstring = ast.get_docstring(tree)
    assert docstring is not None
    assert "May import" in docstring
    assert len(tree.body) == 1, f"tracedpolicy.{layer} has more than its docstring"


def test_the_check_sees_an_import_up_a_layer(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("def late():\n    from tracedpolicy.exporters import telemetry\n")
    ((line, target),) = imported(source)
    assert (line, target) == (2, "tracedpolicy.exporters.telemetry")
    assert rank(target) > rank("tracedpolicy.records.loops")
