"""The package layout keeps its promises (docs/architecture.md): imports point down the pipeline, there
are no import cycles, and every module is used.

The import graph is read from the source (every ``import`` statement, inside functions too), so a lazy
import that would close a cycle is caught as well as a top-level one.
"""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOPS = {"sw": "lowbit.sw", "hw": "lowbit.hw", "sim": "lowbit.sim", "boards": "lowbit.boards"}

#: The stages of lowbit.sw in pipeline order. A module may import from its own stage or an earlier one.
SW_STAGES = [
    ("lowbit.sw.errors", "lowbit.sw.outputs", "lowbit.sw.inputs"),
    ("lowbit.sw.ir",),
    ("lowbit.sw.link",),
    ("lowbit.sw.importers",),
    ("lowbit.sw.quant",),
    ("lowbit.sw.data",),
    ("lowbit.sw.flow",),
    ("lowbit.sw.bench", "lowbit.sw.doctor"),
    ("lowbit.sw.cli", "lowbit.sw.commands", "lowbit.sw.api"),
]
#: What the gateware may use of lowbit.sw: the contract (arithmetic, IR), the protocol, errors.
HW_MAY_IMPORT = ("lowbit.sw.errors", "lowbit.sw.ir", "lowbit.sw.link.frames")
#: Modules nothing imports by name because something else loads them: the console script, the CLI's
#: command modules (found by pkgutil), and cocotb test modules (named in a runner call).
ENTRY_POINTS = re.compile(r"^lowbit\.sw\.cli$|^lowbit\.sw\.commands\.\w+$|^lowbit\.sim\.tb_\w+$")


def _modules():
    out = {}
    for top, pkg in TOPS.items():
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = [pkg, *path.relative_to(ROOT / top).with_suffix("").parts]
            is_pkg = parts[-1] == "__init__"
            name = ".".join(parts[:-1] if is_pkg else parts)
            out[name] = (path, is_pkg)
    return out


MODULES = _modules()


def _imports(name):
    path, is_pkg = MODULES[name]
    package = name if is_pkg else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for a in node.names:
                found.add(f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name) for name in MODULES}


def _stage(name):
    for i, stage in enumerate(SW_STAGES):
        if any(name == s or name.startswith(s + ".") for s in stage):
            return i
    return None


def test_every_sw_module_has_a_stage():
    unstaged = [m for m in MODULES if m.startswith("lowbit.sw.") and _stage(m) is None]
    assert unstaged == []


def test_sw_imports_point_down_the_pipeline():
    wrong = [f"{m} (stage {_stage(m)}) imports {t} (stage {_stage(t)})"
             for m, targets in GRAPH.items() if _stage(m) is not None
             for t in sorted(targets) if _stage(t) is not None and _stage(t) > _stage(m)]
    assert wrong == []


def test_gateware_uses_only_the_contract_and_the_protocol_from_sw():
    wrong = [f"{m} imports {t}" for m, targets in GRAPH.items() if m.startswith("lowbit.hw")
             for t in sorted(targets) if t.startswith("lowbit.sw") and t != "lowbit.sw"
             and not any(t == a or t.startswith(a + ".") for a in HW_MAY_IMPORT)]
    assert wrong == []


def test_no_import_cycles():
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in sorted(GRAPH[m]):
            if state.get(t) == "open":
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)
    assert cycles == []


def _test_imports():
    found = set()
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
    return found & set(MODULES)


def test_every_module_is_used():
    """Each module is imported by another lowbit module or by a test (sim/ holds test benches that only
    the tests use), or is an entry point."""
    imported = set().union(*GRAPH.values()) | _test_imports()
    unused = [m for m, (_, is_pkg) in MODULES.items()
              if not is_pkg and m not in imported and not ENTRY_POINTS.match(m)]
    assert unused == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if re.match(r"^lowbit\.sim\.tb_\w+$", m)))
def test_cocotb_modules_are_named_by_a_runner(module):
    sources = [path for m, (path, _) in MODULES.items() if m != module] + sorted((ROOT / "tests").glob("*.py"))
    short = module.rsplit(".", 1)[1]
    users = [path.name for path in sources if f'"{module}"' in path.read_text() or f'"{short}"' in path.read_text()]
    assert users, f"no module or test runs the cocotb test module {module}"


@pytest.mark.parametrize("old", sorted(__import__("lowbit.sw", fromlist=["MOVED"]).MOVED))
def test_modules_that_moved_still_import_as_the_new_module(old):
    import importlib
    import sys
    import warnings

    from lowbit.sw import MOVED
    sys.modules.pop(f"lowbit.sw.{old}", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(f"lowbit.sw.{old}")
    new = importlib.import_module(f"lowbit.sw.{MOVED[old]}")
    assert module is new and new.__spec__.name == new.__name__ == f"lowbit.sw.{MOVED[old]}"
    assert not (ROOT / "sw" / f"{old}.py").exists()
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)


def test_the_python_api_names_every_cli_operation():
    from lowbit.sw import api
    for name in ("load_model", "load_float_net", "quantize_net", "train_qat", "reference", "build",
                 "reweight", "simulate_build", "Device"):
        assert name in api.__all__ and callable(getattr(api, name))
