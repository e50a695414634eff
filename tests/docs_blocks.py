"""Running the code blocks of README.md and docs/*.md as a reader would (issue 28).

A page's blocks run in page order, in a temporary folder of their own that looks like a
fresh clone (links to the repository's files; what a block writes lands in the folder):

- ``python``: in one namespace per page, so later blocks use what earlier ones defined;
- ``sql``: statement by statement through ``embed_assets.connect("./.embed_store")``;
- ``sh``: with ``bash -euo pipefail``, ``embed-assets``, ``python`` and ``dg`` on the PATH
  (the test venv's, with this checkout's ``embed_assets``) and ``$HOME`` a temporary
  folder holding ``src/embed_assets`` (a link to this checkout, the path the install
  commands use).

A block whose first line is a ``needs: make demo`` comment (``#`` or ``--``) runs against
a store holding the demo location's tables, materialised once with the hash-bow
embedder (``EMBED_ASSETS_MODEL=hash-bow``: the pipeline ``make demo`` runs, without the
model); a SQL block there that names ``history`` gets the demo's install log registered
under that name, as its comment says.

Cheaper forms, said here and nowhere hidden:

- ``python`` blocks swap ``SentenceTransformerEmbedder`` for ``HashEmbedder(64)`` (same
  interface, no model load) unless ``real_model=True`` (the e2e tests);
- ``make ...`` runs as ``make -n ...``: the recipe is printed, not run (``make test`` is
  this suite; tests/test_dagster_cli.py runs ``make demo``);
- ``pip install ...`` checks what it would install (this checkout, by its path, with extras
  pyproject.toml declares; other packages pinned in constraints.txt) and installs nothing:
  a fresh install takes minutes and is measured in benchmarks/RESULTS.md; ``pip install -e
  .`` of a project a block made (``create-dagster project``) puts its ``src`` folder on the
  ``PYTHONPATH`` of the later blocks, as the editable install would;
- a server a ``sh`` block leaves running in the background is stopped (SIGTERM to the
  block's process group) when the page ends;
- in a block after ``<!-- docs-test: check-dg -->``, ``dg launch`` loads the definitions
  it names and checks that each ``--job`` exists there and each ``--config-json`` is JSON,
  without launching (the whole demo launch is tests/test_dagster_cli.py's).

Every other command runs for real: ``dg launch -f definitions.py`` materialises the
example project with the real model, the Ray blocks start their own local cluster.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^(?P<indent>[ ]*)```(?P<lang>\w*)[^\n]*\n(?P<code>.*?)^(?P=indent)```[ ]*$", re.M | re.S)
MARKER = re.compile(r"<!--\s*docs-test:\s*(?P<what>[\w-]+)\s*-->\s*$")
NEEDS_DEMO = re.compile(r"^\s*(#|--)\s*needs: make demo", re.M)
RUN_LANGS = ("python", "sql", "sh", "bash")
# fenced blocks that are not code: what a command printed; a config file (parsed, not run)
OUTPUT_LANGS = ("text", "yaml")

# Blocks the suite does not run yet, by page and first line, each with the reason. They came
# with pages written on other branches (merged from main) as illustrations of a setup the
# page describes (a remote server, a dg project, a folder of photos); their owners make
# them runnable or mark their output as text. test_docs.py checks every entry still
# names a block, so the list only shrinks.
NOT_RUN: dict[tuple[str, str], str] = {
}
# what a fresh clone holds that the blocks use (linked into each page's folder)
CLONE_ENTRIES = ("Makefile", "pyproject.toml", "constraints.txt", "setup.py", "dg.toml", "workspace.yaml",
                 "embed_assets", "dagster_project", "examples", "sql", "benchmarks", "scripts", "docs",
                 "tests")


@dataclass
class Block:
    page: str
    line: int
    lang: str
    code: str
    marker: str | None

    @property
    def needs_demo(self) -> bool:
        return bool(NEEDS_DEMO.search(self.code.split("\n", 1)[0] + "\n"))

    def where(self) -> str:
        return f"{self.page}:{self.line}"

    def key(self) -> tuple[str, str]:
        # the first line without its comment, which is what a reader would quote
        return (self.page, self.code.split("\n", 1)[0].split("  #")[0].strip())


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks(path: Path) -> list[Block]:
    text = path.read_text()
    out = []
    for m in FENCE.finditer(text):
        before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mk = MARKER.search(before)
        out.append(Block(str(path.relative_to(ROOT)), text.count("\n", 0, m.start()) + 1,
                         m.group("lang"), textwrap.dedent(m.group("code")), mk.group("what") if mk else None))
    return out


# -- the shell's world ---------------------------------------------------------------------
PIP_SHIM = '''#!{python}
"""pip, as the docs test runs it: checks what an install command names, installs nothing."""
import re, sys, tomllib
from pathlib import Path

root = Path({root!r})
extras = set(tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"])
lines = (root / "constraints.txt").read_text().splitlines()
pinned = {{re.split(r"[=<>\\[]", l)[0].strip().lower() for l in lines if l.strip() and not l.startswith("#")}}
args = sys.argv[1:]
if not args or args[0] != "install":
    sys.exit(f"docs test: pip {{' '.join(args)}}: only 'pip install' is expected in the docs")
specs = [a for a in args[1:] if not a.startswith("-")]
if not specs:
    sys.exit("docs test: pip install with nothing to install")
for spec in specs:
    m = re.fullmatch(r"(?P<path>[^\\[]+?)(\\[(?P<extras>[^\\]]*)\\])?", spec)
    path = Path(m.group("path")).expanduser()
    if "/" in m.group("path") or path.exists():
        own = (path / "pyproject.toml").is_file() and (path / "src").is_dir()
        if own and path.resolve() != root.resolve():
            # a user's own project (create-dagster's layout): importable in later blocks,
            # as its editable install would make it (docs_blocks._projects)
            with open(Path.home() / ".docs_projects", "a") as f:
                f.write(str((path / "src").resolve()) + "\\n")
            continue
        if not (path / "pyproject.toml").is_file() or path.resolve() != root.resolve():
            sys.exit(f"docs test: {{spec}}: not a path of this checkout")
        want = {{e.strip() for e in (m.group("extras") or "").split(",") if e.strip()}}
        if want - extras:
            sys.exit(f"docs test: {{spec}}: no such extra {{sorted(want - extras)}}; "
                     f"declared: {{sorted(extras)}}")
    elif m.group("path").lower() not in pinned:
        sys.exit(f"docs test: {{spec}}: not pinned in constraints.txt")
print("docs test: would install", " ".join(specs))
'''

DG_SHIM = '''#!/bin/bash
# dg, as the docs test runs it: the real one, or a check of what it names (EA_DOCS_DG=check)
if [ "${{EA_DOCS_DG:-}}" = check ]; then exec {python} {checker} "$@"; fi
exec {dg} "$@"
'''

DG_CHECK = '''"""Check a `dg launch` command line without launching: its definitions load, its jobs
exist, its JSON parses."""
import argparse, importlib, json, sys

ap = argparse.ArgumentParser()
ap.add_argument("verb")
ap.add_argument("-m", "--module-name", default="dagster_project.definitions")  # dg.toml's target
ap.add_argument("-f", "--python-file")
ap.add_argument("--assets")
ap.add_argument("--job")
ap.add_argument("--partition-range")
ap.add_argument("--partition")
ap.add_argument("--config-json")
a = ap.parse_args()
assert a.verb == "launch", a.verb
assert not a.python_file, "check-dg is for the repository's modules"
mod = importlib.import_module(a.module_name)  # from PYTHONPATH: this checkout
defs = mod.defs
if not hasattr(defs, "resolve_job_def"):  # a package whose defs is a dg defs folder
    defs = importlib.import_module(a.module_name + ".definitions").defs
if a.job:
    defs.resolve_job_def(a.job)          # raises for an unknown job
if a.config_json:
    json.loads(a.config_json)
if a.partition_range:
    lo, hi = a.partition_range.split("...")
    keys = {k for ad in defs.resolve_all_asset_specs() if ad.partitions_def
            for k in ad.partitions_def.get_partition_keys()}
    assert lo in keys and hi in keys, (lo, hi)
print("docs test: checked dg", " ".join(sys.argv[1:]))
'''


def shell_world(base: Path) -> tuple[Path, dict[str, str]]:
    """A folder that looks like a fresh clone with its venv, and the environment for ``sh``."""
    home = base / "home"
    (home / "src").mkdir(parents=True, exist_ok=True)
    if not (home / "src" / "embed_assets").exists():
        (home / "src" / "embed_assets").symlink_to(ROOT)
    tools = base / "tools"
    venv_bin = base / "clone" / ".venv" / "bin"
    for d in (tools, venv_bin):
        d.mkdir(parents=True, exist_ok=True)
    real_bin = Path(sys.executable).parent
    (tools / "dg_check.py").write_text(DG_CHECK)
    shims = {
        "pip": PIP_SHIM.format(python=sys.executable, root=str(ROOT)),
        "make": "#!/bin/bash\n# make, as the docs test runs it: print the recipe (make -n)\n"
                f"exec /usr/bin/env -u MAKEFLAGS {shutil.which('make') or '/usr/bin/make'} -n "
                f"-C {base / 'clone'} \"$@\"\n",
        "dg": DG_SHIM.format(python=sys.executable, checker=tools / "dg_check.py", dg=real_bin / "dg"),
    }
    for name, body in shims.items():
        for d in (tools, venv_bin):
            (d / name).write_text(body)
            (d / name).chmod(0o755)
    for exe in real_bin.iterdir():  # the rest of the venv's commands, as they are
        if not (venv_bin / exe.name).exists():
            (venv_bin / exe.name).symlink_to(exe)
    env = {
        "PATH": os.pathsep.join([str(tools), str(real_bin), "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": str(home), "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "LANCE_LOG": "error",
        "NO_MKDOCS_2_WARNING": "1", "LANG": "C.UTF-8", "DAGSTER_DISABLE_TELEMETRY": "1",
    }
    return base / "clone", env


# folders a block may write into (dg scaffold, a copied example): copied, so that nothing a
# block does lands in the checkout; the rest are links
COPIED = ("dagster_project", "examples")


def clone_folder(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in CLONE_ENTRIES:
        if not (ROOT / name).exists() or (folder / name).exists():
            continue
        if name in COPIED:
            shutil.copytree(ROOT / name, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (folder / name).symlink_to(ROOT / name)


# -- running -------------------------------------------------------------------------------
def run_sql(con: Any, code: str) -> int:
    body = "\n".join(line for line in code.splitlines() if not line.strip().startswith("--"))
    n = 0
    for stmt in (s.strip() for s in body.split(";")):
        if stmt:
            con.sql(stmt).fetchall()
            n += 1
    return n


# process groups of the page's sh blocks: a block may leave a server running in the
# background for the next blocks (docs/serving.md); whatever is left at the page's end is
# stopped, also when a block failed
_GROUPS: list[int] = []


def run_sh(block: Block, cwd: Path, env: dict[str, str]) -> str:
    env = dict(env)
    if block.marker == "check-dg":
        env["EA_DOCS_DG"] = "check"
    env["PYTHONPATH"] = os.pathsep.join([*_projects(env), env["PYTHONPATH"]])
    proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", block.code], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    _GROUPS.append(proc.pid)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, f"{block.where()}: rc {proc.returncode}\n{out[-3000:]}\n{err[-5000:]}"
    return out + err


def _projects(env: dict[str, str]) -> list[str]:
    """The ``src`` folders of projects a block installed with ``pip install -e`` (the pip
    shim records them): importable in later blocks, as the editable install makes them."""
    f = Path(env["HOME"]) / ".docs_projects"
    return f.read_text().split() if f.exists() else []


def _stop_groups() -> None:
    import signal

    while _GROUPS:
        pgid = _GROUPS.pop()
        try:
            os.killpg(pgid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            continue


def run_page(page: Path, base: Path, demo_dir: Callable[[], Path], *, real_model: bool = False,
             only: Callable[[Block], bool] | None = None) -> dict[str, Any]:
    """Run a page's blocks; returns the Python namespace and the shell outputs (for checks)."""
    import embed_assets
    from embed_assets import HashEmbedder

    cwd, env = shell_world(base)
    clone_folder(cwd)
    ns: dict[str, Any] = {"__name__": "docs"}
    shell: list[str] = []
    old_cwd = Path.cwd()
    real = embed_assets.SentenceTransformerEmbedder
    if not real_model:
        embed_assets.SentenceTransformerEmbedder = lambda *a, **k: HashEmbedder(64)  # type: ignore[misc]
    # (RAY_*: Ray 2.60's first local cluster in a process turns token auth on for the
    # process and caches the token it saved under this page's temporary HOME; left so, a
    # later test's cluster failed to start: "InvalidAuthToken")
    saved_env = {k: os.environ.get(k) for k in ("EMBED_ASSETS_STORE", "HOME", "RAY_AUTH_MODE",
                                                  "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
    try:
        os.environ.pop("EMBED_ASSETS_STORE", None)
        os.environ["HOME"] = env["HOME"]
        for b in blocks(page):
            if only is not None and not only(b):
                continue
            if b.key() in NOT_RUN:
                continue
            if b.lang == "yaml":
                import yaml

                yaml.safe_load(b.code)  # a config file: it parses
                continue
            if b.lang in OUTPUT_LANGS:
                continue
            assert b.lang in RUN_LANGS, f"{b.where()}: a ```{b.lang} block: python, sql, sh or text?"
            if b.needs_demo:
                os.chdir(demo_dir())
                if b.lang == "python":
                    exec(compile(b.code, b.where(), "exec"), {"__name__": "docs"})  # the page's own example
                elif b.lang == "sql":
                    con = embed_assets.connect(store="./.embed_store")
                    if re.search(r"\bhistory\b", b.code):
                        from embed_assets._demo import demo_source, simulate_history

                        con.register("history", simulate_history(demo_source()).to_arrow())
                    assert run_sql(con, b.code) > 0, b.where()
                else:
                    shell.append(run_sh(b, Path.cwd(), env))
                continue
            os.chdir(cwd)
            if b.lang == "python":
                exec(compile(b.code, b.where(), "exec"), ns)  # the page's own example
            elif b.lang == "sql":
                assert run_sql(embed_assets.connect(store="./.embed_store"), b.code) > 0, b.where()
            else:
                shell.append(run_sh(b, cwd, env))
    finally:
        os.chdir(old_cwd)
        embed_assets.SentenceTransformerEmbedder = real  # type: ignore[misc]
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _forget_ray_auth()
        _stop_groups()
    return {"ns": ns, "shell": shell, "cwd": cwd, "home": Path(env["HOME"])}


def _forget_ray_auth() -> None:
    """Drop the Ray token this process cached while a page ran (see run_page)."""
    if "ray._raylet" not in sys.modules:
        return
    from ray._raylet import AuthenticationTokenLoader, Config

    # the order of Ray's own reset_auth_token_state: the config first, then the cache
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def materialise_demo(root: Path) -> Path:
    """``root/.embed_store`` with the demo location's tables (hash-bow), as ``make demo``
    leaves them."""
    from dagster import DagsterInstance, materialize

    import embed_assets

    home = root / "dagster_home"
    home.mkdir(parents=True)
    keep = {k: os.environ.get(k) for k in ("DAGSTER_HOME", "EMBED_ASSETS_STORE", "EMBED_ASSETS_MODEL")}
    os.environ.update(DAGSTER_HOME=str(home), EMBED_ASSETS_STORE=str(root / ".embed_store"),
                      EMBED_ASSETS_MODEL="hash-bow")
    try:
        from dagster_project.demo import build_demo_definitions

        defs = build_demo_definitions("debian", tag_prod=True)  # what dagster_project loads
        instance = DagsterInstance.get()
        try:
            res = materialize([*defs.assets, *defs.asset_checks], resources=defs.resources,
                              instance=instance)
            assert res.success
        finally:
            instance.dispose()
    finally:
        for k, v in keep.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    tags = embed_assets.Store(str(root / ".embed_store")).table("debian_embeddings").tags()
    assert tags.get("prod") is not None
    return root


def json_lines(text: str) -> list[Any]:
    return [json.loads(ln) for ln in text.splitlines() if ln.startswith(("{", "["))]
