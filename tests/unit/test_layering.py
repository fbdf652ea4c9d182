"""The map of the code (docs/DESIGN.md) holds: each package imports only the layers below it, with no cycles.

Imports are read from the source (every ``import``, at module level or inside a function), so a
lazy import cannot slip past. The layers, bottom up:

- ``traffic``: the pure domain; no framework, no Redis, no environment reads.
- ``infra``: infrastructure every process shares; imports ``traffic``; no Celery, no Flask.
- ``celeryconfig``, ``beat_schedule``: Celery's settings; import ``infra`` and ``traffic``.
- ``workers`` and ``web``: import ``infra`` and ``traffic``, never each other; ``workers`` may
  import ``celeryconfig``; ``web`` never loads Celery.
- ``stack`` (local-run and test tooling) and ``bench`` may import everything; nothing imports them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIRST_PARTY = ("traffic", "infra", "workers", "web", "stack", "bench", "celeryconfig", "beat_schedule", "tests")
PRODUCT = ("traffic", "infra", "workers", "web", "celeryconfig", "beat_schedule")

FRAMEWORKS = (
    "celery", "kombu", "billiard", "flask", "flask_socketio", "socketio", "engineio", "werkzeug",
    "simple_websocket", "gunicorn", "redis", "prometheus_client",
)  # fmt: skip
ALLOWED: dict[str, set[str]] = {
    "traffic": {"traffic"},
    "infra": {"traffic", "infra"},
    "celeryconfig": {"traffic", "infra", "beat_schedule"},
    "beat_schedule": {"traffic", "infra"},
    "workers": {"traffic", "infra", "workers", "celeryconfig"},
    "web": {"traffic", "infra", "web"},
}
"""First-party top-level names each layer may import."""
FORBIDDEN_THIRD_PARTY: dict[str, tuple[str, ...]] = {
    "traffic": FRAMEWORKS,
    "infra": ("celery", "kombu", "billiard", "flask", "werkzeug", "gunicorn"),
    "web": ("celery", "kombu", "billiard"),
}
"""Third-party packages a layer must not import (``infra.emitter`` may use Flask-SocketIO's emitter)."""


@dataclass(frozen=True)
class Import:
    """One imported module name, where it was imported."""

    source: str
    target: str
    line: int


def module_name(path: Path, root: Path = ROOT) -> str:
    """``workers/capture/service.py`` → ``workers.capture.service``; a package's ``__init__`` is the package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files(*tops: str, root: Path = ROOT) -> Iterator[Path]:
    """Every Python file of the named packages or top-level modules."""
    for top in tops:
        single = root / f"{top}.py"
        if single.is_file():
            yield single
        yield from sorted((root / top).rglob("*.py")) if (root / top).is_dir() else ()


def is_module(name: str, root: Path = ROOT) -> bool:
    """Whether ``name`` is a first-party module or package in the tree."""
    path = root.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports_of(path: Path, root: Path = ROOT) -> Iterator[Import]:
    """Every module ``path`` imports; ``from pkg import name`` counts as ``pkg.name`` when that is a module."""
    source = module_name(path, root)
    package = source if path.name == "__init__.py" else source.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (Import(source, alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield Import(source, full if is_module(full, root) else base, node.lineno)


def first_party(name: str) -> bool:
    """Whether an imported name belongs to this project."""
    return name.split(".")[0] in FIRST_PARTY


def layer_violations(root: Path = ROOT) -> list[str]:
    """Imports that reach above their layer or into a forbidden framework."""
    found = []
    for path in source_files(*PRODUCT, root=root):
        for imp in imports_of(path, root):
            layer, top = imp.source.split(".")[0], imp.target.split(".")[0]
            if first_party(imp.target) and top not in ALLOWED[layer]:
                found.append(f"{path.relative_to(root)}:{imp.line} imports {imp.target}")
            elif top in FORBIDDEN_THIRD_PARTY.get(layer, ()):
                found.append(f"{path.relative_to(root)}:{imp.line} imports the framework {imp.target}")
    return found


def import_cycles(root: Path = ROOT) -> list[list[str]]:
    """Groups of first-party modules that import each other, directly or through others (Tarjan's SCC)."""
    graph: dict[str, set[str]] = {}
    for path in source_files(*PRODUCT, "stack", root=root):
        edges = graph.setdefault(module_name(path, root), set())
        edges.update(i.target for i in imports_of(path, root) if first_party(i.target) and i.target != i.source)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
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
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_every_layer_imports_only_the_layers_below_it() -> None:
    assert layer_violations() == []


def test_there_are_no_import_cycles() -> None:
    assert import_cycles() == []


def test_the_domain_reads_no_environment() -> None:
    readers = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in source_files("traffic")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "os.environ" in line or "os.getenv" in line
    ]
    assert readers == []


def test_ultralytics_torch_and_the_inference_runtimes_live_behind_the_detector_adapter() -> None:
    users = {
        module_name(path)
        for path in source_files(*PRODUCT)
        for imp in imports_of(path)
        if imp.target.split(".")[0] in ("ultralytics", "torch", "onnxruntime", "openvino", "tensorrt")
    }
    assert users == {"traffic.yolo_detector"}


def test_the_tracking_library_lives_behind_the_tracker_adapter() -> None:
    users = {
        module_name(path)
        for path in source_files(*PRODUCT)
        for imp in imports_of(path)
        if imp.target.split(".")[0] in ("trackers", "supervision", "boxmot", "lap")
    }
    assert users == {"traffic.bytetrack"}


@pytest.mark.parametrize(
    ("layer", "code", "expected"),
    [
        ("workers", "from web import create_app", "imports web"),
        ("workers", "import stack.harness", "imports stack.harness"),
        ("web", "from workers.context import worker_context", "imports workers.context"),
        ("web", "from stack import cli", "imports stack"),
        ("web", "from celery import Celery", "imports the framework celery"),
        ("traffic", "import redis", "imports the framework redis"),
        ("traffic", "from flask import Flask", "imports the framework flask"),
        ("traffic", "from infra.frame_store import FrameStore", "imports infra.frame_store"),
        ("infra", "def lazy():\n    from workers import app", "imports workers"),
    ],
)
def test_a_forbidden_import_is_caught(layer: str, code: str, expected: str, tmp_path: Path) -> None:
    (tmp_path / layer).mkdir()
    (tmp_path / layer / "__init__.py").write_text("")
    (tmp_path / layer / "probe.py").write_text(f'"""Probe."""\n{code}\n')
    line = 2 + code.count("\n")
    assert layer_violations(tmp_path) == [f"{layer}/probe.py:{line} {expected}"]


def test_a_cycle_is_caught(tmp_path: Path) -> None:
    (tmp_path / "infra").mkdir()
    (tmp_path / "infra" / "__init__.py").write_text("")
    (tmp_path / "infra" / "a.py").write_text('"""Probe."""\nfrom infra import b\n')
    (tmp_path / "infra" / "b.py").write_text('"""Probe."""\n\n\ndef f() -> None:\n    from infra import a\n')
    assert import_cycles(tmp_path) == [["infra.a", "infra.b"]]
