"""The package's shape: imports go one way through the layers, modules stay small."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "meanfield"

# Bottom to top; a module may import only from its own layer or the ones below.
LAYERS = [
    ("meanfield._version", "meanfield.progress"),
    ("meanfield.core",),
    ("meanfield.ntk",),
    ("meanfield.sweeps",),
    ("meanfield.experiments",),
    ("meanfield.plot",),
    ("meanfield.api", "meanfield.simulate", "meanfield.trainability", "meanfield"),
    ("meanfield.explore",),
    ("meanfield.cli", "meanfield.__main__"),
]
# Inside the core, the same rule between its modules (vocabulary, budget and validate are
# shared; validate names the activation it checks, so it sits above activation).
CORE_ORDER = ["vocabulary", "budget", "functions", "activation", "validate", "gaussian",
              "moment_table", "length_map", "near_one", "correlation_map", "point", "engine",
              "analysis", "critical", "advice"]
MAX_LINES = 500


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def _layer(name):
    best = None
    for k, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if name == p or (p != "meanfield" and name.startswith(p + ".")):
                best = k
    if best is None and name == "meanfield":
        best = LAYERS.index(next(lay for lay in LAYERS if "meanfield" in lay))
    return best


def _imports(name, path):
    """Absolute names of the meanfield modules imported anywhere in the file."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.split(".")[0] == "meanfield"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "meanfield":
                continue
            # "from . import x" names a module when x is one
            for a in node.names:
                sub = f"{mod}.{a.name}"
                out.append(sub if (PACKAGE.parent / Path(*sub.split("."))).with_suffix(".py").exists()
                           or (PACKAGE.parent / Path(*sub.split("."))).is_dir() else mod)
    return out


@pytest.mark.parametrize("name,path", list(_modules()), ids=lambda v: str(v))
def test_imports_go_down_the_layers(name, path):
    own = _layer(name)
    assert own is not None, f"{name} is in no layer"
    for imp in _imports(name, path):
        assert _layer(imp) <= own, f"{name} imports {imp} from a higher layer"
        if name.startswith("meanfield.core.") and imp.startswith("meanfield.core."):
            a = name.split(".")[2]
            b = imp.split(".")[2]
            assert CORE_ORDER.index(b) <= CORE_ORDER.index(a), f"{name} imports {imp} (core order)"


@pytest.mark.parametrize("name,path", list(_modules()), ids=lambda v: str(v))
def test_modules_stay_small(name, path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{name} has {n} lines: split it into named steps"


def test_no_public_function_shadows_a_module():
    import meanfield as mf

    for name in mf.__all__:
        obj = getattr(mf, name)
        if callable(obj) and not isinstance(obj, type):
            assert not (PACKAGE / name).is_dir() and not (PACKAGE / f"{name}.py").exists(), name
