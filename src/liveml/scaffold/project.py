"""Write a liveml project (`liveml init`) or a task into one (`liveml new-task`) from templates.

Templates are package data under `templates/` (project files and one task's files); a template
names its values as `{{name}}` and nothing else is substituted, so Makefiles, YAML
interpolations (`${task}`) and Python braces pass through unchanged. Both commands share one
path for adding a task: its files, its entry point in pyproject.toml, its lines in
conf/pipeline.yaml.
"""

from __future__ import annotations

import keyword
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from liveml.tasks import GROUP

TEMPLATES = Path(__file__).parent / "templates"
ENTRY_HEADER = re.compile(r"""^\[project\.entry-points\.(["'])liveml\.tasks\1\]\s*(#.*)?$""")
PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
TASK_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
PACKAGE_NAME = re.compile(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*")

# Project files: output path -> template (under templates/project/). Paths are templates too.
PROJECT_FILES = {
    "pyproject.toml": "pyproject.toml.tmpl",
    "README.md": "README.md.tmpl",
    "Makefile": "Makefile.tmpl",
    ".gitignore": "gitignore.tmpl",
    ".dvcignore": "dvcignore.tmpl",
    ".ci/run": "ci_run.tmpl",
    "conf/config.yaml": "config.yaml.tmpl",
    "conf/pipeline.yaml": "pipeline.yaml.tmpl",
    "src/{{package_path}}/__init__.py": "package_init.py.tmpl",
}
EXECUTABLE = (".ci/run",)
# One task's files (templates/task/).
TASK_FILES = {
    "src/{{package_path}}/{{task}}/__init__.py": "__init__.py.tmpl",
    "src/{{package_path}}/{{task}}/config.py": "config.py.tmpl",
    "src/{{package_path}}/{{task}}/data.py": "data.py.tmpl",
    "src/{{package_path}}/{{task}}/model.py": "model.py.tmpl",
    "src/{{package_path}}/{{task}}/serving.py": "serving.py.tmpl",
    "conf/task/{{task}}.yaml": "task.yaml.tmpl",
    "conf/model/{{task}}.yaml": "model.yaml.tmpl",
    "conf/data/{{task}}.yaml": "data.yaml.tmpl",
    "conf/trainer/{{task}}.yaml": "trainer.yaml.tmpl",
    "tests/test_{{task}}.py": "test_task.py.tmpl",
}
# The config groups a task writes its own file into (conf/<group>/<task>.yaml).
TASK_GROUPS = ("task", "model", "data", "trainer")
# The groups a task composes in conf/pipeline.yaml: (group, option); None = the task's own file.
PIPELINE_GROUPS = (
    ("task", None),
    ("model", None),
    ("data", None),
    ("trainer", None),
    ("logger", "wandb"),
    ("paths", "default"),
    ("monitor", "default"),
)
DVC_CONFIG = """[core]
    autostage = true
[hydra]
    enabled = true
    config_name = pipeline
"""


class ScaffoldError(Exception):
    """The project or task cannot be written as asked; the message names the fix."""


@dataclass(frozen=True)
class Names:
    """What the templates are filled with."""

    package: str  # dotted module the tasks live under, e.g. "my_project"
    task: str

    @property
    def values(self) -> dict[str, str]:
        top = self.package.split(".")[0]
        return {
            "package": self.package,
            "package_path": self.package.replace(".", "/"),
            "project": top.replace("_", "-"),
            "task": self.task,
            "Task": "".join(part.capitalize() for part in self.task.split("_")),
            "liveml_version": _liveml_version(),
        }


def render(text: str, values: dict[str, str], source: str = "template") -> str:
    """`text` with every `{{name}}` replaced by `values[name]` (an unknown name is an error)."""

    def one(m: re.Match) -> str:
        if m.group(1) not in values:
            raise ScaffoldError(f"{source} names {{{{{m.group(1)}}}}}, which has no value")
        return values[m.group(1)]

    return PLACEHOLDER.sub(one, text)


def _liveml_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("liveml")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0.1.0"


def _write(root: Path, files: dict[str, str], kind: str, values: dict[str, str]) -> list[Path]:
    written = []
    for out, template in files.items():
        source = TEMPLATES / kind / template
        path = root / render(out, values, "a path")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(source.read_text(), values, f"template {kind}/{template}"))
        written.append(path)
    return written


# --- names -----------------------------------------------------------------------------------


def package_from_dir(folder: Path) -> str:
    """A Python package name from a folder name: `My-Project` -> `my_project`."""
    name = re.sub(r"\W+", "_", folder.name.lower()).strip("_")
    if not name or name[0].isdigit() or keyword.iskeyword(name):
        raise ScaffoldError(
            f"cannot make a Python package name from the folder name {folder.name!r}; "
            "fix: pass one with `--package NAME` (lowercase letters, digits, _)."
        )
    return name


def check_package(package: str) -> None:
    """A new top-level package must be a valid name that shadows no importable module."""
    import importlib.util

    if not PACKAGE_NAME.fullmatch(package) or any(keyword.iskeyword(p) for p in package.split(".")):
        raise ScaffoldError(
            f"{package!r} is not a valid package name; fix: `--package NAME` with lowercase "
            "letters, digits and _ (not starting with a digit, not a Python keyword)."
        )
    spec = importlib.util.find_spec(package.split(".")[0])
    if spec is not None:
        where = spec.origin or ", ".join(spec.submodule_search_locations or [])
        raise ScaffoldError(
            f"a module named {package!r} is already importable here ({where}); a package of "
            "that name would shadow it or be shadowed. Fix: pick another with `--package NAME`."
        )


def check_task_name(task: str) -> None:
    """A task name is a Python identifier that is also a DVC stage prefix and a capture folder
    name, and no installed package registers it yet."""
    from liveml.tasks import installed

    if not TASK_NAME.fullmatch(task) or keyword.iskeyword(task):
        raise ScaffoldError(
            f"task name {task!r} is not allowed; fix: use lowercase letters, digits and _ "
            f"(start with a letter, at most 40 characters), e.g. "
            f"{re.sub(r'[^a-z0-9_]+', '_', task.lower()).strip('_') or 'my_task'!r}."
        )
    packaged = [
        f"{group}/{task}.yaml"
        for group in TASK_GROUPS
        if (Path(__file__).parents[1] / "conf" / group / f"{task}.yaml").is_file()
    ]
    if packaged:
        raise ScaffoldError(
            f"task name {task!r} would replace liveml's packaged conf/{packaged[0]} (a task "
            "writes conf/<group>/<name>.yaml); fix: choose another name."
        )
    found = installed()
    if task in found:
        raise ScaffoldError(
            f"task name {task!r} is taken: an installed package registers it "
            f"({found[task].value}); fix: choose another name."
        )


# --- liveml init -----------------------------------------------------------------------------


def init_project(target: Path, task: str, package: str | None = None) -> Path:
    """Write a complete project into `target` (new or empty): files, first task, git, DVC."""
    from liveml.core.atomic import atomic_dir

    target = Path(target).absolute()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ScaffoldError(
            f"{target} already exists and is not empty; fix: pick a new folder "
            f"(`liveml init NEW_DIR --task {task}`), or run `liveml new-task {task}` inside an "
            "existing project to add a task to it."
        )
    package = package or package_from_dir(target)
    check_package(package)
    check_task_name(task)
    if shutil.which("git") is None:
        raise ScaffoldError("`git` is not on PATH; fix: install git, then re-run `liveml init`.")
    names = Names(package, task)
    with atomic_dir(target) as tmp:  # a failed init leaves nothing behind
        _write(tmp, PROJECT_FILES, "project", names.values)
        for rel in EXECUTABLE:
            (tmp / rel).chmod(0o755)
        add_task(tmp, names)
        _run(["git", "init", "-q"], tmp)
        _run([sys.executable, "-m", "dvc", "init", "-q"], tmp)
        config = tmp / ".dvc" / "config"
        config.write_text(config.read_text() + DVC_CONFIG)
    return target


def _run(cmd: list[str], cwd: Path) -> None:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        shown = " ".join(Path(c).name if i == 0 else c for i, c in enumerate(cmd))
        raise ScaffoldError(
            f"`{shown}` failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}; "
            "fix that, then re-run `liveml init`."
        )


# --- adding a task ---------------------------------------------------------------------------


def add_task(root: Path, names: Names) -> list[Path]:
    """Write a task's files into the project at `root`, register its entry point and add it
    to conf/pipeline.yaml. Checks everything before it writes anything."""
    values = names.values
    clashes = [render(p, values) for p in TASK_FILES if (root / render(p, values)).exists()]
    module = root / "src" / values["package_path"] / f"{names.task}.py"
    if module.exists():
        clashes.append(str(module.relative_to(root)))
    if clashes:
        raise ScaffoldError(
            f"task {names.task!r} would overwrite {', '.join(clashes)}; fix: choose another "
            "name, or remove those files first."
        )
    pyproject = root / "pyproject.toml"
    pipeline = root / "conf" / "pipeline.yaml"
    entry = f'{names.task} = "{names.package}.{names.task}:{values["Task"]}Task"'
    new_pyproject = with_entry_point(pyproject.read_text(), names.task, entry)
    new_pipeline = with_pipeline_task(pipeline.read_text(), names.task)
    written = _write(root, TASK_FILES, "task", values)
    pyproject.write_text(new_pyproject)
    pipeline.write_text(new_pipeline)
    return written


def with_entry_point(text: str, task: str, entry: str) -> str:
    """pyproject.toml text with `entry` added to [project.entry-points."liveml.tasks"]."""
    import tomllib

    try:
        eps = tomllib.loads(text).get("project", {}).get("entry-points", {}).get(GROUP, {})
    except tomllib.TOMLDecodeError as e:
        raise ScaffoldError(f"pyproject.toml is not valid TOML ({e}); fix it first.") from None
    if task in eps:
        raise ScaffoldError(
            f"pyproject.toml already registers a task {task!r} ({eps[task]}); fix: choose "
            "another name."
        )
    lines = text.splitlines()
    at = next((i for i, line in enumerate(lines) if ENTRY_HEADER.match(line)), None)
    if at is None:
        lines += ["", f'[project.entry-points."{GROUP}"]', entry]
    else:
        end = at + 1  # after the table's last key, before blank lines and the next table
        for i in range(at + 1, len(lines)):
            if lines[i].lstrip().startswith("["):
                break
            if lines[i].strip() and not lines[i].lstrip().startswith("#"):
                end = i + 1
        lines.insert(end, entry)
    out = "\n".join(lines) + "\n"
    if task not in tomllib.loads(out)["project"]["entry-points"][GROUP]:  # pragma: no cover
        raise ScaffoldError(f"could not register {task!r} in pyproject.toml; add: {entry}")
    return out


def pipeline_lines(task: str) -> tuple[list[str], list[str]]:
    """(the task's defaults lines, its `tasks:` entry) in conf/pipeline.yaml."""
    defaults = [
        f"  - {group}@tasks.{task}.{group}: {option or task}" for group, option in PIPELINE_GROUPS
    ]
    return defaults, [f"  {task}:", "    seed: 0"]


def with_pipeline_task(text: str, task: str) -> str:
    """conf/pipeline.yaml text with `task`'s defaults lines (before `_self_`) and its entry
    under `tasks:`; a layout this cannot edit is an error that shows the lines to add."""
    import yaml

    defaults, entry = pipeline_lines(task)
    manual = (
        "fix: add these lines to conf/pipeline.yaml yourself, under `defaults:` before "
        "`- _self_`:\n" + "\n".join(defaults) + "\nand under `tasks:`:\n" + "\n".join(entry)
    )
    tasks = (yaml.safe_load(text) or {}).get("tasks") or {}
    if task in tasks:
        raise ScaffoldError(f"conf/pipeline.yaml already has a task {task!r}; pick another name.")
    lines = text.splitlines()
    head = next((i for i, line in enumerate(lines) if line.rstrip() == "defaults:"), len(lines))
    self_at = next(
        (i for i in range(head, len(lines)) if re.fullmatch(r"\s*-\s*_self_\s*", lines[i])), None
    )
    tasks_at = next((i for i, s in enumerate(lines) if re.fullmatch(r"tasks:\s*(\{\})?", s)), None)
    if self_at is None or tasks_at is None:
        raise ScaffoldError(f"conf/pipeline.yaml has a layout new-task cannot edit; {manual}")
    lines[tasks_at] = "tasks:"
    end = tasks_at + 1
    for i in range(tasks_at + 1, len(lines)):
        if lines[i].strip() and not lines[i].startswith((" ", "#")):
            break
        if lines[i].strip() and not lines[i].lstrip().startswith("#"):
            end = i + 1
    # The later position first, so the earlier one stays where it was found.
    for at, new in sorted(((end, entry), (self_at, defaults)), key=lambda x: -x[0]):
        lines[at:at] = new
    out = "\n".join(lines) + "\n"
    if task not in ((yaml.safe_load(out) or {}).get("tasks") or {}):  # pragma: no cover
        raise ScaffoldError(f"could not add {task!r} to conf/pipeline.yaml; {manual}")
    return out


# --- liveml new-task -------------------------------------------------------------------------


def find_package(root: Path) -> str:
    """The module a project's tasks live under: the common parent of its registered tasks'
    modules (pyproject.toml), else its one package under src/."""
    import tomllib

    data = tomllib.loads((root / "pyproject.toml").read_text())
    eps = data.get("project", {}).get("entry-points", {}).get(GROUP, {})
    parents = {value.split(":")[0].rpartition(".")[0] for value in eps.values()}
    if len(parents) == 1 and "" not in parents:
        return parents.pop()
    found = sorted(p.parent.name for p in (root / "src").glob("*/__init__.py"))
    if len(found) == 1 and not parents:
        return found[0]
    raise ScaffoldError(
        f"cannot tell which package of {root} new tasks go in (entry points under "
        f"{sorted(parents) or 'none'}, packages in src/: {found or 'none'}); fix: pass "
        "`--package NAME`."
    )


def new_task(task: str, root: Path | None = None, package: str | None = None) -> list[Path]:
    """Add a task to the project at or above `root` (default: the current folder)."""
    from liveml.core.project import Project

    try:
        project = Project.find(root)
    except FileNotFoundError as e:
        raise ScaffoldError(f"{e} (`liveml init DIR --task {task}` makes a new project)") from None
    if not (project.root / "pyproject.toml").is_file():
        raise ScaffoldError(
            f"{project.root} has no pyproject.toml to register the task in; fix: create one "
            "(`liveml init` writes a complete project)."
        )
    check_task_name(task)
    package = package or find_package(project.root)
    if not PACKAGE_NAME.fullmatch(package):
        raise ScaffoldError(f"{package!r} is not a valid package name; fix: `--package NAME`.")
    if not (project.root / "src" / package.replace(".", "/") / "__init__.py").is_file():
        raise ScaffoldError(
            f"src/{package.replace('.', '/')}/__init__.py does not exist; fix: pass the package "
            "the task goes in with `--package NAME` (a folder under src/ with __init__.py)."
        )
    return add_task(project.root, Names(package, task))
