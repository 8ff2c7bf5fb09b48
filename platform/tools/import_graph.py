"""Count the import graph of ``doctune`` and ``ray_jobs``: modules, arrows (direct imports
between them), arrows that run upward against the layers of pyproject.toml's import-linter
contract, module cycles and package cycles. The figures of docs/architecture.md come from::

    PYTHONPATH=platform:. .venv/bin/python platform/tools/import_graph.py
"""

from __future__ import annotations

import grimp
import networkx as nx

# the layers contract, top (doors) to bottom; a module belongs to the first entry it is in
LAYERS = [
    ["ray_jobs", "doctune.api", "doctune.cli", "doctune.console"],
    ["doctune.local", "doctune.client"],
    ["doctune.drivers"],
    ["doctune.services"],
    ["doctune.runners"],
    ["doctune.train", "doctune.serve", "doctune.data"],
    ["doctune.tasks"],
    ["doctune.spec", "doctune.base_models", "doctune.corpora"],
    ["doctune.store"],
    ["doctune.config", "doctune.errors", "doctune.states", "doctune.metering"],
]


def layer_of(module: str) -> int | None:
    for depth, names in enumerate(LAYERS):
        if any(module == n or module.startswith(n + ".") for n in names):
            return depth
    return None


def package_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "doctune" else parts[0]


def main() -> None:
    graph = grimp.build_graph("doctune", "ray_jobs")
    modules = sorted(graph.modules)
    arrows = [(a, b) for a in modules for b in graph.find_modules_directly_imported_by(a) if b in graph.modules and a != b]
    upward = [(a, b) for a, b in arrows
              if None not in (layer_of(a), layer_of(b)) and layer_of(b) < layer_of(a)]
    module_cycles = [c for c in nx.strongly_connected_components(nx.DiGraph(arrows)) if len(c) > 1]
    packages = nx.DiGraph([(package_of(a), package_of(b)) for a, b in arrows if package_of(a) != package_of(b)])
    package_cycles = [c for c in nx.strongly_connected_components(packages) if len(c) > 1]
    print(f"modules {len(modules)}, arrows {len(arrows)}, upward arrows {len(upward)}, "
          f"module cycles {len(module_cycles)}, package cycles {len(package_cycles)}")
    for a, b in upward:
        print(f"  upward: {a} -> {b}")
    for cycle in module_cycles + package_cycles:
        print(f"  cycle: {' <-> '.join(sorted(cycle))}")


if __name__ == "__main__":
    main()
