"""One distribution, one import namespace, and a package structure without cycles.

- the wheel installs one top-level name, `kerasops`, and lists every folder holding code;
- a user's own `models/`, `data/`, `serving/` or `pipelines/` folder in the working directory
  changes nothing (`python -m kerasops`, the console script, plain imports);
- no import cycle between the package's modules, and every import inside a function says why
  it is deferred;
- no function of the step and recipe modules runs over 60 lines.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"kerasops": "kerasops", "data": "kerasops.data", "models": "kerasops.models"}
FOLDERS |= {"pipelines": "kerasops.pipelines", "serving": "kerasops.serving"}


def package_modules() -> dict[str, Path]:
    """Every module of the kerasops namespace -> its file."""
    modules = {}
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([package, *parts])] = path
    return modules


def test_pyproject_lists_every_package_folder():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {
        ".".join([FOLDERS[folder], *init.parent.relative_to(ROOT / folder).parts])
        for folder in FOLDERS
        for init in (ROOT / folder).rglob("__init__.py")
    }
    assert set(config["packages"]) == found
    assert config["package-dir"] == {package: folder for folder, package in FOLDERS.items()}


def source_tree(target: Path) -> Path:
    """The files git tracks (or would), copied to `target`: what a clone builds from."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for relative in filter(None, listed.split("\0")):
        if (ROOT / relative).is_file():
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / relative, target / relative)
    return target


@pytest.mark.slow
def test_the_wheel_installs_one_top_level_name(tmp_path):
    source = source_tree(tmp_path / "source")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q"]
        + ["-w", str(tmp_path), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("kerasops-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        assert archive.read(top_level).decode().split() == ["kerasops"]
    assert {n.split("/")[0] for n in names if not n.startswith("kerasops-")} == {"kerasops"}
    assert "kerasops/__main__.py" in names and "kerasops/pipelines/steps/train.py" in names
    assert not any("/raw/" in n or "/prepared/" in n for n in names)


@pytest.mark.slow
def test_a_users_own_folders_named_like_ours_change_nothing(tmp_path):
    for name in ("models", "data", "serving", "pipelines"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise ImportError('the user {name}')\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    script = "import kerasops.pipelines.config, kerasops.serving.repository; print('imported')"
    commands = [
        [sys.executable, "-c", script],
        [sys.executable, "-m", "kerasops", "--help"],
        [str(Path(sys.executable).with_name("kerasops")), "--help"],
    ]
    for command in commands:
        done = subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, (command, done.stderr[-2000:])
        assert "imported" in done.stdout or "usage: kerasops" in done.stdout


def imported(node: ast.AST, module: str, is_package: bool, modules: dict) -> list[str]:
    """The kerasops modules an import statement loads (`from pkg import sub` loads `pkg.sub`)."""
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            parts = module.split(".") if is_package else module.split(".")[:-1]
            parts = parts[: len(parts) - node.level + 1]
            base = ".".join([*parts, *([base] if base else [])])
        subs = [f"{base}.{alias.name}" for alias in node.names]
        targets = [t for t in subs if t in modules] or [base]
    found = []
    for target in targets:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != module:
            found.append(target)
    return found


def explained(lines: list[str], node: ast.stmt) -> bool:
    """Whether a `deferred` comment is on the import or above its block of imports."""
    first = node.lineno - 1
    while first > 0 and lines[first - 1].strip().startswith(("import ", "from ", "#", ")")):
        first -= 1
    return any("deferred" in line for line in lines[first : node.end_lineno])


def module_imports() -> tuple[dict[str, set[str]], list[str]]:
    """Module-level import graph of the namespace, and function-level imports lacking a reason."""
    modules, graph, unexplained = package_modules(), {}, []
    for module, path in modules.items():
        source = path.read_text()
        lines, tree = source.splitlines(), ast.parse(source)
        is_package = path.name == "__init__.py"
        graph[module] = set()
        for node in tree.body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                graph[module].update(imported(node, module, is_package, modules))
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                is_import = isinstance(node, ast.Import | ast.ImportFrom)
                if is_import and not explained(lines, node):
                    unexplained.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return graph, unexplained


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_and_every_deferred_import_says_why():
    graph, unexplained = module_imports()
    assert cycles(graph) == []
    assert unexplained == [], "imports inside functions need a `# deferred: why` comment"


def test_step_and_recipe_functions_stay_short():
    files = [*(ROOT / "pipelines" / "steps").glob("*.py"), ROOT / "models" / "recipe.py"]
    files += list((ROOT / "models").glob("*/recipe.py"))
    long = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.end_lineno - node.lineno + 1 > 60:
                long.append(f"{path.relative_to(ROOT)}:{node.name}")
    assert long == []


def test_images_copy_everything_the_wheel_is_built_from():
    """`docker build` cannot run here: check each image copies the package folders and the
    files pyproject.toml reads (README, LICENSE) before its `pip install .`."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = {*config["tool"]["setuptools"]["package-dir"].values(), "pyproject.toml"}
    needed |= {config["project"]["readme"], *config["project"]["license-files"]}
    dockerfiles = (
        "docker/train.Dockerfile",
        "docker/serve.Dockerfile",
        "serving/deploy/kerasops.Dockerfile",
    )
    for dockerfile in dockerfiles:
        copied = set()
        for line in (ROOT / dockerfile).read_text().splitlines():
            if line.startswith("COPY "):
                sources = line.split()[1:-1]
                copied |= {source.split("/")[0] for source in sources}
        assert needed <= copied, (dockerfile, sorted(needed - copied))
