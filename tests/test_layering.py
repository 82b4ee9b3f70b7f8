"""The import layering of DESIGN §1 (table in docs/architecture.md), checked on the source.

Every import statement of every module is read with ``ast`` — including imports
inside functions — so a lazy import cannot sneak past the rule.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ("labctl", "drivers", "calibration", "sims")
STDLIB = set(sys.stdlib_module_names)

# package → (third-party top-level modules allowed, project modules allowed by prefix)
RULES: dict[str, tuple[set[str], tuple[str, ...]]] = {
    "sims": ({"torch", "numpy"}, ("sims",)),
    "drivers": ({"numpy", "cv2", "serial", "screeninfo"}, ("drivers",)),
    "calibration": (
        {"numpy", "cv2", "torch"},
        ("calibration", "drivers", "sims.optics", "sims.device", "sims.io", "sims.errors"),
    ),
}
# The simulated bench shares the twin's physics (one implementation, DESIGN §1).
SIM_BENCH_EXTRA = ({"torch"}, ("sims.optics", "sims.device", "sims.errors"))


def imports_of(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def allowed(package: str, path: Path, name: str) -> bool:
    top = name.split(".")[0]
    third, project = RULES[package]
    if package == "drivers" and "sim" in path.relative_to(ROOT / "drivers").parts[0]:
        third, project = third | SIM_BENCH_EXTRA[0], project + SIM_BENCH_EXTRA[1]
    if top in PROJECT:
        return any(name == p or name.startswith(p + ".") for p in project)
    return top in STDLIB or top in third or top == "__future__"


@pytest.mark.parametrize("package", sorted(RULES))
def test_package_imports_follow_layering(package):
    files = modules(package)
    assert files, f"no modules found in {package}/"
    bad = [
        f"{path.relative_to(ROOT)}:{line}: import {name}"
        for path in files
        for line, name in imports_of(path)
        if not allowed(package, path, name)
    ]
    assert not bad, "layering violations (DESIGN §1):\n" + "\n".join(bad)


def test_rule_catches_a_violation(tmp_path):
    # The checker itself must be able to fail.
    p = ROOT / "sims" / "x.py"
    assert not allowed("sims", p, "drivers.hdmi")
    assert not allowed("sims", p, "labctl.config")
    assert not allowed("sims", p, "cv2")
    assert allowed("sims", p, "torch.fft")
    assert not allowed("drivers", ROOT / "drivers" / "hdmi.py", "sims.optics")
    assert allowed("drivers", ROOT / "drivers" / "sim" / "world.py", "sims.optics")
    assert not allowed("drivers", ROOT / "drivers" / "sim" / "world.py", "sims.train")
    assert not allowed("calibration", ROOT / "calibration" / "x.py", "sims.train")
    assert not allowed("calibration", ROOT / "calibration" / "x.py", "labctl")


def test_lower_packages_never_import_labctl():
    for package in RULES:
        for path in modules(package):
            for line, name in imports_of(path):
                assert name.split(".")[0] != "labctl", f"{path}:{line} imports {name}"
