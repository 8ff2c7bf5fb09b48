"""The code keeps the shape docs/architecture.md promises: no function in platform/ longer
than 80 lines, ray_jobs entrypoints that only parse arguments, and no service imports in
the code that runs on workers and replicas (import-linter checks every other layer rule)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_FUNCTION_LINES = 80
MAX_ENTRYPOINT_LINES = 30


def _functions(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.lineno, node.end_lineno - node.lineno + 1


def test_no_function_in_platform_is_longer_than_80_lines():
    too_long = [f"{p.relative_to(ROOT)}:{line} {name} ({n} lines)"
                for p in sorted((ROOT / "platform").rglob("*.py")) if "migrations" not in p.parts
                for name, line, n in _functions(p) if n > MAX_FUNCTION_LINES]
    assert not too_long, "split these functions:\n" + "\n".join(too_long)


def test_ray_jobs_entrypoints_only_parse_arguments():
    for path in sorted((ROOT / "ray_jobs").glob("*.py")):
        if path.name == "__init__.py":
            continue
        lines = path.read_text().splitlines()
        assert len(lines) <= MAX_ENTRYPOINT_LINES, f"{path.name} has {len(lines)} lines; move its logic to doctune.drivers"
        assert "import doctune.drivers" in path.read_text() or "from doctune.drivers" in path.read_text(), path.name


def test_workers_and_replicas_never_import_services():
    for package in ("train", "serve"):
        for path in sorted((ROOT / "platform" / "doctune" / package).rglob("*.py")):
            text = path.read_text()
            assert "from doctune.services" not in text and "import doctune.services" not in text, path.relative_to(ROOT)
