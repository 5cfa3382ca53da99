"""The house (DESIGN.md "Layout"): front doors at the package root, rooms that import downwards
only, scoring without JAX, configs without model code, and no sys.path edits anywhere."""

import ast
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "rnn_vos_jax")
# What a user runs (python -m rnn_vos_jax.X) or imports (api). A new command joins this list.
FRONT_DOORS = {
    "__init__",
    "api",
    "convert_torch",
    "export",
    "main",
    "score",
    "segment",
    "submission",
}
ROOMS = ("training", "evaluation", "inference", "data", "models", "weights", "scoring", "runtime")
THIN = 120  # lines: flags or arguments, then one call into a room
HEAVY = ("jax", "jaxlib", "flax", "optax", "orbax", "tensorflow", "torch")


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _python(code: str, cwd: str = REPO) -> str:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip()


def _imported_rooms(path: str) -> set[str]:
    """The rooms (rnn_vos_jax.<room>) that a module imports, at any level of its code."""
    rooms = set()
    for node in ast.walk(ast.parse(_read(path), path)):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        rooms |= {n.split(".")[1] for n in names if n.startswith("rnn_vos_jax.")}
    return rooms & set(ROOMS)


def test_the_root_holds_only_thin_front_doors():
    root = {f[:-3] for f in os.listdir(PACKAGE) if f.endswith(".py")}
    assert root == FRONT_DOORS, f"modules at the package root that are not front doors: {root}"
    folders = {
        d
        for d in os.listdir(PACKAGE)
        if os.path.isdir(os.path.join(PACKAGE, d)) and not d.startswith("__")
    }
    assert folders == set(ROOMS)
    for name in FRONT_DOORS:
        lines = len(_read(os.path.join(PACKAGE, name + ".py")).splitlines())
        assert lines <= THIN, f"rnn_vos_jax/{name}.py has {lines} lines: move its work into a room"


@pytest.mark.parametrize("room", ROOMS)
def test_each_room_says_what_it_may_import_and_keeps_to_it(room):
    init = os.path.join(PACKAGE, room, "__init__.py")
    doc = ast.get_docstring(ast.parse(_read(init))) or ""
    match = re.search(r"May import: ([^\n.(]*)", doc)
    assert match, f"{init}: its docstring must end with 'May import: <rooms>.'"
    allowed = set(re.findall(r"\b(" + "|".join(ROOMS) + r")\b", match.group(1)))
    for folder, _, files in os.walk(os.path.join(PACKAGE, room)):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                stray = _imported_rooms(path) - allowed - {room}
                assert not stray, f"{os.path.relpath(path, REPO)} imports {sorted(stray)}"


def test_scoring_imports_no_jax_flax_or_tensorflow():
    code = (
        "import sys; import rnn_vos_jax.score, rnn_vos_jax.submission;"
        "import rnn_vos_jax.scoring.folders, rnn_vos_jax.scoring.metrics;"
        "import rnn_vos_jax.scoring.submission, rnn_vos_jax.scoring.toolkit_csv;"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))"
    )
    assert _python(code) == "[]"


def test_configs_load_by_path_from_anywhere_and_import_no_model_code(tmp_path):
    """A config file by its path, from another working directory, imports only installed
    packages (its shared pieces from rnn_vos_jax.configs) and no model code or JAX."""
    spec = os.path.join(REPO, "configs", "bi_hs2s.py") + ":demo"
    code = (
        "import sys; from rnn_vos_jax.runtime import config_files;"
        f"c = config_files.load_config({spec!r});"
        "print(c.model.name, c.model.depth_divisor);"
        "print(sorted(m for m in sys.modules if m.startswith('rnn_vos_jax.models')"
        f" or m.split('.')[0] in {HEAVY!r}))"
    )
    assert _python(code, cwd=str(tmp_path)).splitlines() == ["bi_hs2s 6", "[]"]


def test_no_sys_path_edits_anywhere():
    pattern = re.compile(r"sys\.path\s*(\.|\[|\+?=)")
    tracked = subprocess.run(
        ["git", "ls-files", "*.py", "*.sh"], capture_output=True, text=True, cwd=REPO, check=True
    ).stdout.split()
    edits = [f for f in tracked if pattern.search(_read(os.path.join(REPO, f)))]
    assert edits == [], f"files that edit sys.path: {edits}"
