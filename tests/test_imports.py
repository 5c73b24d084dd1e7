"""The module graph has floors, and every import points down: a module imports only modules of
lower floors, at its top or inside a function (so no import inside a function can hide a
circle). Read from the source with ast, independently of the code it checks."""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Each project module's floor, from the foundations up to the entry points.
FLOORS = {
    "common": 0, "tables": 0,                                  # foundations; the paper's numbers, tables
    "constraints": 1, "pairing": 1,
    "datasets": 2, "engine": 2,
    "genre": 3,                                                # the paper's method
    "baselines": 4,
    "generative": 5,
    "diffusion": 6,                                            # Table 4's methods
    "evaluate": 7,                                             # the protocol and its command line
    "ablation": 8, "gaps": 8, "toy2d": 8, "diffusion_study": 8,  # studies, and training past one process
    "distributed": 8,
    "report": 9,                                               # rendering
    "experiments": 10, "bench": 10, "kernel_paths": 10,        # entry points
    "paper_sizes": 10,
}
MODULES = sorted(f[:-3] for f in os.listdir(ROOT) if f.endswith(".py"))


def imported(path: str, modules) -> list[tuple[str, int]]:
    """(module, line) for every import in the file `path` of one of `modules`, anywhere in it."""
    with open(path) as f:
        tree = ast.parse(f.read())
    found = []
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
        found += [(name.split(".")[0], node.lineno) for name in names if name.split(".")[0] in modules]
    return found


def test_every_module_has_a_floor_and_every_floor_a_module():
    assert not set(MODULES) - set(FLOORS), f"modules with no floor: {sorted(set(MODULES) - set(FLOORS))}"
    assert not set(FLOORS) - set(MODULES), f"floors of no module: {sorted(set(FLOORS) - set(MODULES))}"


@pytest.mark.parametrize("module", MODULES)
def test_imports_point_down(module):
    upward = [f"line {line}: {name} (floor {FLOORS.get(name)})"
              for name, line in imported(os.path.join(ROOT, f"{module}.py"), MODULES)
              if FLOORS.get(name, 99) >= FLOORS.get(module, -1)]
    assert not upward, f"{module} (floor {FLOORS.get(module)}) imports the same floor or above: {'; '.join(upward)}"


def test_the_walk_finds_imports_inside_functions(tmp_path):
    """The check itself: an import inside a function counts like one at the top, and only the
    project's modules count."""
    source = "import os\n\n\ndef f():\n    from low import x\n    import high.sub\n    return x\n"
    (tmp_path / "high.py").write_text(source)
    assert imported(str(tmp_path / "high.py"), ["high", "low"]) == [("low", 5), ("high", 6)]
