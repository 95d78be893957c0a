"""docs/plugins.md does what it says: every code block in it is run here.

How each block is exercised:

* ```toml / ```python / ```yaml with ``title="PATH"``: written to PATH, in a
  temporary folder, in the order of the page (the tutorial's files);
* ```console: each ``$ command`` is run in that folder, in order, and the output
  shown under it must appear in the real output (``...`` elides lines, a line
  ending in `` ...`` is a prefix). ``pip install -e .`` becomes a non-editable
  ``pip install --target`` so that the environment running the tests is left
  alone; ``benchlab run`` is left to the slower, ``suite``-marked test;
* ```python without a title: executed as a module; its hook implementations are
  registered and every component they register must pass the conformance kit;
* ```text: the failure message of a contract violation, which a real run (on
  the page's own in-memory dataset, model and explainer) with a broken attack
  must produce.
"""

from __future__ import annotations

import ast
import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from benchlab.components import KINDS, Component, NoParams, Provenance
from benchlab.plugins import build_registry, default_registry
from benchlab.testing import check_attack, check_dataset, check_explainer, check_model, run_checks

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "plugins.md"
EXAMPLE = ROOT / "examples" / "benchlab-pgd"
HOOKS = ("register_datasets", "register_models", "register_attacks", "register_explainers",
         "register_procedures", "register_sinks")

_FENCE = re.compile(r'^```(?P<lang>[\w-]*)(?:\s+title="(?P<title>[^"]+)")?\s*$')


@dataclass(frozen=True)
class Block:
    lang: str
    title: str | None
    code: str
    line: int

    @property
    def id(self) -> str:
        return f"line{self.line}"


def parse_blocks(text: str) -> list[Block]:
    blocks, current, body = [], None, []
    for number, line in enumerate(text.splitlines(), start=1):
        if current is None:
            match = _FENCE.match(line)
            if match:
                current, body = (match["lang"], match["title"], number), []
        elif line.strip() == "```":
            lang, title, start = current
            blocks.append(Block(lang, title, "\n".join(body) + "\n", start))
            current = None
        else:
            body.append(line)
    assert current is None, f"unclosed code block at line {current[2]}"
    return blocks


BLOCKS = parse_blocks(DOC.read_text(encoding="utf-8"))


def blocks(lang: str, *, titled: bool | None = None) -> list[Block]:
    return [b for b in BLOCKS if b.lang == lang
            and (titled is None or (b.title is not None) == titled)]


def titled(suffix: str) -> Block:
    (block,) = [b for b in BLOCKS if b.title and b.title.endswith(suffix)]
    return block


@dataclass(frozen=True)
class Command:
    argv: list[str]
    env: dict[str, str]
    expected: list[str]
    line: int

    def __str__(self) -> str:
        return shlex.join(self.argv)


def commands(block: Block) -> list[Command]:
    """The ``$ `` lines of a console block, each with the output lines shown under it."""
    found: list[Command] = []
    for offset, line in enumerate(block.code.splitlines(), start=1):
        if line.startswith("$ "):
            words = shlex.split(line[2:])
            env = {}
            while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
                key, value = words.pop(0).split("=", 1)
                env[key] = value
            found.append(Command(words, env, [], block.line + offset))
        elif found:
            found[-1].expected.append(line.rstrip())
    return found


def output_problem(expected: list[str], actual: str) -> str | None:
    """Why the shown output is not in ``actual``; None when it is."""
    lines = [line.rstrip() for line in actual.splitlines()]
    position = 0
    for want in expected:
        if want == "...":
            continue
        prefix = want[:-4] if want.endswith(" ...") else None
        while position < len(lines) and not (
                lines[position] == want
                or (prefix is not None and lines[position].startswith(prefix))):
            position += 1
        if position == len(lines):
            return f"expected line not found (in order): {want!r}"
        position += 1
    return None


# -- the page's shape -----------------------------------------------------------------

KNOWN_COMMANDS = {"mkdir", "cd", "pip", "benchlab", "pytest"}


def test_every_block_has_a_known_role():
    assert BLOCKS, "no code blocks found"
    for block in BLOCKS:
        where = f"docs/plugins.md:{block.line}"
        assert block.lang in {"console", "toml", "python", "yaml", "text"}, where
        if block.lang in {"toml", "yaml"}:
            assert block.title, f"{where}: {block.lang} blocks become files; give a title"
        if block.lang in {"console", "text"}:
            assert not block.title, where
        for command in commands(block) if block.lang == "console" else []:
            assert command.argv[0] in KNOWN_COMMANDS, f"{where}: no runner for {command}"


def test_the_tutorial_mirrors_the_example_package():
    tomllib = pytest.importorskip("tomllib")
    assert titled("src/benchlab_pgd/__init__.py").code == (
        EXAMPLE / "src" / "benchlab_pgd" / "__init__.py").read_text()
    doc_project = tomllib.loads(titled("pyproject.toml").code)["project"]
    assert doc_project == tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    example_tests = (EXAMPLE / "tests" / "test_conformance.py").read_text()
    doc_tests = titled("tests/test_conformance.py").code
    for node in ast.parse(doc_tests).body:
        if isinstance(node, ast.FunctionDef):
            assert ast.get_source_segment(doc_tests, node) in example_tests, node.name


def test_the_check_table_lists_every_check():
    text = DOC.read_text(encoding="utf-8")
    stub = {"attack": (check_attack, lambda *a: None), "model": (check_model, lambda *a: None),
            "explainer": (check_explainer, lambda *a: None),
            "dataset": (check_dataset, _StubDataset())}
    for kind, (checks, obj) in stub.items():
        component = Component(kind, "stub", obj, NoParams, Provenance("s", "s", "0"))
        for check in checks(component):
            assert re.search(rf"\| {kind} +\| `{check.name}` +\|", text), (kind, check.name)


class _StubDataset:
    info = None

    def load(self, split, root):
        raise NotImplementedError

    def fetch(self, root):
        raise NotImplementedError

    def files(self, root):
        return []


# -- the tutorial, performed -------------------------------------------------------------

@dataclass
class Tutorial:
    root: Path
    target: Path
    cwd: Path
    deferred: list[tuple[Command, Path]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@contextlib.contextmanager
def installed(target: Path, env: dict[str, str], cwd: Path | None = None):
    """Run in-process as if ``target`` were site-packages, with ``env`` set."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        patch.syspath_prepend(str(target))
        if cwd is not None:
            patch.chdir(cwd)
        _forget("benchlab_pgd")
        default_registry.cache_clear()
        try:
            yield
        finally:
            default_registry.cache_clear()
            _forget("benchlab_pgd")


def _forget(name: str) -> None:
    for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[module]


def _subprocess_env(target: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(target), env.get("PYTHONPATH", "")])
    return env


def _run(command: Command, tutorial: Tutorial) -> tuple[int, str]:
    name, *args = command.argv
    if name == "mkdir":
        for path in (a for a in args if not a.startswith("-")):
            (tutorial.cwd / path).mkdir(parents=True, exist_ok=True)
        return 0, ""
    if name == "cd":
        tutorial.cwd = (tutorial.cwd / args[0]).resolve()
        return 0, ""
    if name == "pip":
        assert args[:2] == ["install", "-e"], f"unexpected pip command: {command}"
        source = (tutorial.cwd / args[2].split("[")[0].strip("\"'")).resolve()
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
             "--no-index", "--disable-pip-version-check", "--target", str(tutorial.target),
             str(source)], capture_output=True, text=True, timeout=300)
        return done.returncode, done.stdout + done.stderr
    if name == "pytest":
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
            cwd=tutorial.cwd, capture_output=True, text=True, timeout=600,
            env=_subprocess_env(tutorial.target, OMP_NUM_THREADS="1", **command.env))
        return done.returncode, done.stdout + done.stderr
    assert name == "benchlab"
    cli = pytest.importorskip("benchlab.cli")
    out, err = io.StringIO(), io.StringIO()
    with installed(tutorial.target, command.env, tutorial.cwd), \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(args)
    return status, out.getvalue() + err.getvalue()


@pytest.fixture(scope="module")
def tutorial(tmp_path_factory) -> Tutorial:
    """Every file and command of the page, in order, except `benchlab run`."""
    root = tmp_path_factory.mktemp("tutorial")
    done = Tutorial(root=root, target=root / ".site-packages", cwd=root)
    for block in BLOCKS:
        if block.title:
            path = root / block.title
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(block.code, encoding="utf-8")
        if block.lang != "console":
            continue
        for command in commands(block):
            if command.argv[:2] == ["benchlab", "run"]:
                done.deferred.append((command, done.cwd))
                continue
            status, output = _run(command, done)
            problem = output_problem(command.expected, output)
            if status != 0:
                problem = f"exit status {status}"
            blocked = command.env.get("BENCHLAB_BLOCK_PLUGINS", "")
            for name in filter(None, blocked.split(",")):
                if re.search(rf"^{re.escape(name)}  \(", output, re.MULTILINE):
                    problem = f"blocked plugin {name} is listed"
            if problem:
                done.problems.append(f"docs/plugins.md:{command.line}: `{command}`: {problem}\n"
                                     f"{output[-2000:]}")
    return done


def test_the_tutorial_runs_as_written(tutorial):
    assert tutorial.problems == []
    assert (tutorial.target / "benchlab_pgd-0.1.0.dist-info").is_dir()


@pytest.mark.slow
def test_the_tutorial_suite_runs(tutorial, tmp_path, mnist_root):
    pytest.importorskip("benchlab.runner", reason="benchlab.runner is not available yet")
    (command, cwd), = tutorial.deferred
    done = subprocess.run(
        [sys.executable, "-m", "benchlab.cli", *command.argv[1:]], cwd=cwd,
        capture_output=True, text=True, timeout=900,
        env=_subprocess_env(tutorial.target, BENCHLAB_CACHE=str(tmp_path / "cache")))
    assert done.returncode == 0, done.stderr[-3000:]
    out = cwd / command.argv[command.argv.index("--out") + 1]
    import pandas as pd

    results = pd.read_csv(out / "results.csv")
    accuracy = results[results["metric"] == "accuracy"].set_index(["attack", "eps"])["value"]
    for eps in (0.1, 0.2):
        assert accuracy[("pgd", eps)] <= accuracy[("fgsm", eps)] + 0.01
    assert "pgd" in (out / "summary.md").read_text()


# -- reference snippets --------------------------------------------------------------------

def load_snippet(block: Block, name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__file__ = f"<docs/plugins.md:{block.line}>"
    sys.modules[name] = module  # pydantic and dataclasses look their module up
    try:
        exec(compile(block.code, module.__file__, "exec"), module.__dict__)
    finally:
        del sys.modules[name]
    return module


@pytest.mark.parametrize("block", blocks("python", titled=False), ids=lambda b: b.id)
def test_reference_snippet_runs_and_its_components_pass_the_kit(block, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE / "src"))
    _forget("benchlab_pgd")
    try:
        module = load_snippet(block, f"docs_snippet_{block.line}")
    finally:
        _forget("benchlab_pgd")
    if not any(callable(getattr(module, hook, None)) for hook in HOOKS):
        return
    provenance = Provenance("snippet", "docs", "0")
    registry = build_registry([("snippet", module, provenance)], entry_points=False)
    components = [c for kind in KINDS for c in registry.components(kind)]
    assert components
    for component in components:
        results = run_checks(component, data_root=tmp_path)
        assert [(r.name, r.message) for r in results if not r.passed] == [], component.name


# -- a contract violation in a real run ------------------------------------------------------

LEAKY = '''
import torch

import benchlab


def leaky(model, images, labels, eps, params):
    """Moves every pixel by 2 eps: twice the allowed distance."""
    sign = torch.ones_like(images)
    sign[..., ::2] = -1
    return torch.stack([(images + 2 * e * sign).clamp(0, 1) for e in eps])


@benchlab.hookimpl
def register_attacks(register):
    register("leaky", leaky)
'''

VIOLATION_SUITE = """\
name: contract_violation
dataset: {name: bars, train_size: 1000, test_size: 200}
models:
  - {name: mlp, hidden: 32}
train: {runs: 1, epochs: 1, batch_size: 50, lr: 0.05}
attacks:
  - {name: fgsm, eps: [0.1]}
  - {name: leaky, eps: [0.1]}
explainers:
  - {name: saliency}
evaluate: {test_size: 100, explain_size: 20, count: 4}
"""


def write_distribution(site: Path, name: str, modules: dict[str, str]) -> None:
    """Modules, and a dist-info advertising each of them as a benchlab plugin."""
    for module, code in modules.items():
        (site / f"{module}.py").write_text(code)
    dist_info = site / f"{name.replace('-', '_')}-0.1.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
    (dist_info / "entry_points.txt").write_text(
        "[benchlab]\n" + "".join(f"{module} = {module}\n" for module in modules))


def snippet_registering(hook: str) -> str:
    (block,) = [b for b in blocks("python", titled=False) if f"def {hook}(" in b.code]
    return block.code


def test_a_broken_attack_fails_only_its_jobs(tmp_path):
    """The page's account of a contract violation, on a run of its own snippets."""
    cli = pytest.importorskip("benchlab.cli")
    pytest.importorskip("benchlab.runner", reason="benchlab.runner is not available yet")
    site = tmp_path / "site"
    site.mkdir()
    write_distribution(site, "benchlab-leaky", {"leaky": LEAKY})
    write_distribution(site, "benchlab-docs", {
        "bars": snippet_registering("register_datasets"),
        "mlp": snippet_registering("register_models"),
        "saliency": snippet_registering("register_explainers")})
    suite = tmp_path / "suite.yaml"
    suite.write_text(VIOLATION_SUITE)
    out = tmp_path / "run"
    env = {"BENCHLAB_CACHE": str(tmp_path / "cache")}
    with installed(site, env), contextlib.redirect_stderr(io.StringIO()), \
            contextlib.redirect_stdout(io.StringIO()):
        status = cli.main(["run", str(suite), "--out", str(out), "--device", "cpu"])
    for module in ("leaky", "bars", "mlp", "saliency"):
        _forget(module)

    assert status == 1
    import pandas as pd

    jobs = pd.read_csv(out / "jobs.csv").set_index("id")
    (expected,) = [b.code.strip() for b in blocks("text")]
    attack = "attack-mlp-r00-leaky"
    assert jobs.loc[attack, "status"] == "failed"
    assert jobs.loc[attack, "message"] == expected
    assert jobs.loc["explain-mlp-r00-leaky-saliency", "message"] == f"not run: {attack} failed"
    others = jobs.drop(index=[attack, "explain-mlp-r00-leaky-saliency"])
    assert set(others["status"]) == {"ok"} and len(others) == 3
    results = pd.read_csv(out / "results.csv")
    assert set(results["attack"].dropna()) == {"fgsm"}
    summary = (out / "summary.md").read_text()
    # in the Markdown table a '|' of the message is escaped, so the row stays one row
    assert "## Failures" in summary and expected.replace("|", "\\|") in summary

