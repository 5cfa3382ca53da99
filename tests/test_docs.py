"""The README and docs/*.md as written: their commands, links and paths exist.

Commands are the lines of fenced code blocks (other than ```python and ```text blocks) that start
with `python -m rnn_vos_jax.`, `python data_prep/`, `python benchmarks/`, `launch/` or
`benchmarks/...sh`, after a `pip install ... &&` prefix and VAR=value assignments, with backslash
continuations joined, and inline code spans of the text that start like that. Each distinct program runs `--help` once (launch scripts: no arguments, which
prints their usage), a few at a time. Every `--flag` a command uses must appear in its program's
help; `--config=FILE[:ARG]` must load and every `--config.KEY=...` must be a key of that config.
Placeholders (DIR, FILE, <...>, [optional] brackets) are fine: only flags and config keys are
checked. Launch scripts pass their flags on to `python -m rnn_vos_jax.main`, so their flags are
checked against main's help and their CONFIG argument is loaded.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

from rnn_vos_jax.runtime import config_files

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MAIN = "python -m rnn_vos_jax.main"
# Code blocks that hold no commands: Python snippets, log lines, layout trees.
NOT_COMMANDS = ("python", "text")
ENV_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
PLACEHOLDER_KEY = re.compile(r"[A-Z][A-Z0-9_]*")  # --config.KEY=VALUE in a usage line
CONFIG_SPEC = re.compile(r"[^=\s]+\.py(:\S*)?")  # a launch script's CONFIG argument
REPO_PATH = re.compile(
    r"(?:rnn_vos_jax|configs|data_prep|launch|benchmarks|tests|docs|\.ci)/[\w./-]*"
)
COMMAND_STARTS = ("python -m rnn_vos_jax.", "python data_prep/", "python benchmarks/", "launch/")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HELP_TIMEOUT_S = 180


def _rel(path: pathlib.Path) -> str:
    return str(path.relative_to(ROOT))


@dataclasses.dataclass(frozen=True)
class Block:
    doc: str
    info: str  # the fence's info string ('', 'python', 'text', ...)
    start: int  # line number of the block's first line
    lines: tuple[str, ...]


def code_blocks(path: pathlib.Path) -> list[Block]:
    blocks, info, start, lines = [], None, 0, []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fence = line.strip().startswith("```")
        if fence and info is None:
            info, start, lines = line.strip()[3:].strip(), number + 1, []
        elif fence:
            blocks.append(Block(_rel(path), info, start, tuple(lines)))
            info = None
        elif info is not None:
            lines.append(line)
    assert info is None, f"{_rel(path)}: code block opened at line {start - 1} is never closed"
    return blocks


def prose_lines(path: pathlib.Path) -> list[tuple[int, str]]:
    """(line number, line) of every line outside fenced code blocks."""
    out, inside = [], False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip().startswith("```"):
            inside = not inside
        elif not inside:
            out.append((number, line))
    return out


@dataclasses.dataclass(frozen=True)
class Command:
    doc: str
    line: int
    text: str  # as written, continuations joined
    program: str  # 'python -m rnn_vos_jax.main', 'python data_prep/convert.py', 'launch/gpu.sh'
    args: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.doc} line {self.line}: {self.text}"

    @property
    def is_script(self) -> bool:
        return not self.program.startswith("python ")

    @property
    def flags_program(self) -> str:
        """The program whose flags these are: launch scripts pass theirs to main."""
        return MAIN if self.program.startswith("launch/") else self.program

    def flags(self) -> list[tuple[str, str | None]]:
        """(name, value) of every --flag, brackets of optional parts removed."""
        out = []
        for arg in self.args:
            arg = arg.strip("[]")
            if arg.startswith("--"):
                name, eq, value = arg[2:].partition("=")
                out.append((name, value if eq else None))
        return out

    def config_spec(self) -> str | None:
        for name, value in self.flags():
            if name == "config" and value:
                return value
        if self.program.startswith("launch/"):  # CONFIG is a positional argument
            for arg in self.args:
                if not arg.startswith(("-", "[")) and CONFIG_SPEC.fullmatch(arg):
                    return arg
        return None


def _parse(text: str, doc: str, line: int) -> Command | None:
    # <host 0 address> and the like are one placeholder, whatever their spaces.
    tokens = shlex.split(re.sub(r"<[^<>]*>", "PLACEHOLDER", text), comments=True)
    while tokens and ENV_ASSIGNMENT.match(tokens[0]):
        tokens.pop(0)
    if len(tokens) >= 3 and tokens[:2] == ["python", "-m"] and tokens[2].startswith("rnn_vos_jax."):
        if PLACEHOLDER_KEY.fullmatch(tokens[2].rpartition(".")[2]):
            return None  # python -m rnn_vos_jax.X in a sentence about the commands
        return Command(doc, line, text, f"python -m {tokens[2]}", tuple(tokens[3:]))
    if (
        len(tokens) >= 2
        and tokens[0] == "python"
        and tokens[1].startswith(("data_prep/", "benchmarks/"))
    ):
        return Command(doc, line, text, f"python {tokens[1]}", tuple(tokens[2:]))
    if tokens and (
        tokens[0].startswith("launch/")
        or (tokens[0].startswith("benchmarks/") and tokens[0].endswith(".sh"))
    ):
        return Command(doc, line, text, tokens[0], tuple(tokens[1:]))
    return None


def commands(path: pathlib.Path) -> list[Command]:
    out = []
    for block in code_blocks(path):
        if block.info.split()[:1] and block.info.split()[0] in NOT_COMMANDS:
            continue
        i = 0
        while i < len(block.lines):
            line, text = block.start + i, block.lines[i].strip()
            while text.endswith("\\") and i + 1 < len(block.lines):
                i += 1
                text = text[:-1].rstrip() + " " + block.lines[i].strip()
            i += 1
            for part in text.split("&&"):  # pip install -e ".[test]" && python -m ...
                command = _parse(part.strip(), block.doc, line)
                if command is not None:
                    out.append(command)
    for line, text in prose_lines(path):  # `python -m rnn_vos_jax.segment --checkpoint=` in a text
        for span in re.findall(r"`([^`]+)`", text):
            if span.startswith(COMMAND_STARTS):
                command = _parse(span, _rel(path), line)
                if command is not None:
                    out.append(command)
    return out


COMMANDS = [c for doc in DOCS for c in commands(doc)]
PROGRAMS = sorted({c.program for c in COMMANDS} | {c.flags_program for c in COMMANDS})


@dataclasses.dataclass(frozen=True)
class Help:
    argv: tuple[str, ...]
    returncode: int | None
    output: str


def _help(program: str) -> Help:
    env = dict(os.environ, JAX_PLATFORMS="cpu", RNN_VOS_JAX_HUGE_PAGES="0")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if program.startswith("python "):
        words = program.split()[1:]
        argv = (sys.executable, *words, "--help")
    else:  # a shell script: no arguments prints its usage (launch/), others are not run
        path = ROOT / program
        if not path.is_file() or not os.access(path, os.X_OK):
            return Help((program,), None, f"{program} is not an executable file in the repository")
        if not program.startswith("launch/"):
            return Help((program,), 0, "")  # not run: it has no usage message
        argv = (str(path),)
    try:
        run = subprocess.run(
            argv,
            check=False,  # the status is checked by the tests
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=HELP_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as error:
        return Help(argv, None, f"timed out after {HELP_TIMEOUT_S} s: {error.output}")
    return Help(argv, run.returncode, run.stdout)


@pytest.fixture(scope="module")
def helps() -> dict[str, Help]:
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(PROGRAMS, pool.map(_help, PROGRAMS)))


@functools.cache
def _load_config(spec: str):
    return config_files.load_config(spec)


def _is_placeholder(spec: str) -> bool:
    name = spec.partition(":")[0]
    return not name.endswith(".py") and PLACEHOLDER_KEY.fullmatch(name) is not None


def test_the_parser_finds_the_readme_commands():
    demo = [c for c in COMMANDS if c.doc == "README.md" and c.program == MAIN]
    assert any("--config=configs/hs2s.py:demo" in c.args for c in demo), (
        "the README's demo command was not found: is the parser broken?"
    )


@pytest.mark.parametrize("program", PROGRAMS)
def test_help_runs(program, helps):
    result = helps[program]
    where = sorted({f"{c.doc} line {c.line}" for c in COMMANDS if c.program == program})
    shown = f"`{' '.join(result.argv)}` (used in {', '.join(where) or 'launch scripts'})"
    ran = result.returncode is not None
    assert ran, f"{shown}: {result.output}"
    bad = ("Traceback", "No module named", "can't open file", "Unknown command line flag 'help'")
    problems = [b for b in bad if b in result.output]
    assert not problems, f"{shown} does not print its help ({problems}):\n{result.output[-2000:]}"
    if program.startswith("launch/"):
        assert result.returncode == 2 and program in result.output, (
            f"{shown}: expected its usage (naming {program}) and exit status 2, got "
            f"{result.returncode}:\n{result.output}"
        )
        assert "rnn_vos_jax.main" in (ROOT / program).read_text(), (
            f"{program} no longer runs rnn_vos_jax.main: its flags are checked against main's"
        )


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: f"{c.doc}:{c.line}")
def test_command_flags_and_config(command, helps):
    program = command.flags_program
    text = helps[program].output
    flags = command.flags()
    if command.is_script and not command.program.startswith("launch/"):
        assert not flags, f"{command}: {command.program} has no usage to check its flags against"
        return
    for name, _ in flags:
        if name.startswith("config."):
            assert re.search(r"--config[:.]", text), (
                f"{command}: `{program} --help` shows no --config flag taking --config.KEY "
                f"overrides, but the doc passes --{name}"
            )
        else:
            listed = re.search(rf"--(\[no\])?{re.escape(name)}(?![\w-])", text)
            assert listed, f"{command}: --{name} is not in the help of `{program}`"
    spec = command.config_spec()
    if spec is None or _is_placeholder(spec):
        return
    try:
        config = _load_config(spec)
    except Exception as error:  # noqa: BLE001 - any failure to load is the finding
        pytest.fail(f"{command}: --config={spec} does not load: {type(error).__name__}: {error}")
    for name, _ in flags:
        if not name.startswith("config."):
            continue
        keys = name.split(".")[1:]
        if any(PLACEHOLDER_KEY.fullmatch(k) for k in keys):
            continue
        node = config
        for depth, key in enumerate(keys):
            found = bool(hasattr(node, "keys") and key in node)
            assert found, (
                f"{command}: --{name}: {spec} has no key config.{'.'.join(keys[: depth + 1])}"
            )
            node = node[key]


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@functools.cache
def _anchors(path: pathlib.Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose_lines(path):
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match:
            slug = _slug(match.group(1))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.add(slug if n == 0 else f"{slug}-{n}")
    return out


@pytest.mark.parametrize("doc", DOCS, ids=_rel)
def test_relative_links_point_to_files(doc):
    problems = []
    for number, line in prose_lines(doc):
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path_part, _, anchor = target.partition("#")
            path = (doc.parent / path_part).resolve() if path_part else doc
            if not path.exists():
                problems.append(f"line {number}: {target}: no such file")
            elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
                problems.append(f"line {number}: {target}: no heading #{anchor} in {path.name}")
    assert not problems, f"{_rel(doc)}:\n" + "\n".join(problems)


@pytest.mark.parametrize("doc", DOCS, ids=_rel)
def test_repository_paths_exist(doc):
    problems = []
    for number, line in prose_lines(doc):
        for span in re.findall(r"`([^`]+)`", line):
            path = span.split(":")[0]  # configs/hs2s.py:demo
            if REPO_PATH.fullmatch(path) and not (ROOT / path).exists():
                problems.append(f"line {number}: `{span}`")
    assert not problems, f"{_rel(doc)} names paths that do not exist:\n" + "\n".join(problems)


def test_python_snippets_compile_and_name_the_api():
    from rnn_vos_jax import api

    problems = []
    for doc in DOCS:
        snippets = [
            (f"{block.doc} line {block.start}", "\n".join(block.lines))
            for block in code_blocks(doc)
            if block.info == "python"
        ]
        for where, code in snippets:
            try:
                compile(code, where, "exec")
            except SyntaxError as error:
                problems.append(f"{where}: {error}")
        spans = [
            (f"{_rel(doc)} line {n}", " ".join(re.findall(r"`([^`]+)`", line)))
            for n, line in prose_lines(doc)
        ]
        for where, code in snippets + spans:
            for chain in re.findall(r"(?<![\w/.])api((?:\.\w+)+)", code):
                obj = api
                for attr in chain.strip(".").split("."):
                    if not hasattr(obj, attr):
                        problems.append(f"{where}: api{chain}")
                        break
                    obj = getattr(obj, attr)
    assert not problems, "Python names in the docs that do not exist:\n" + "\n".join(problems)


def test_ci_runs_the_readme_test_command():
    readme = {line.strip() for b in code_blocks(ROOT / "README.md") for line in b.lines}
    ci = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    test_lines = [line for line in ci if "pytest" in line and not line.startswith("#")]
    assert test_lines, ".ci/run runs no pytest command"
    for line in test_lines:
        assert line in readme, f".ci/run runs `{line}`, which is not a line of README.md"
