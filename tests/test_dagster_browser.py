"""The Dagster UI in headless Chromium: `make ui` (dg dev on workspace.yaml) and a bare
`dagster dev` serve both code locations; a click on "Materialize all" launches a run and
the asset page then shows the new Lance version in the materialisation metadata; a
rollback started from the asset page's link to its Launchpad, launched as the Launchpad
opens, shows the new version and its checks evaluated; a version picked from the restore
job's Launchpad menu (nothing typed) becomes the new latest.

Needs Debian's chromium and npm playwright-core: ``scripts/install_browser_deps.sh``.
"""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from embed_assets import Store
from embed_assets.dagster import run_for_version

ROOT = Path(__file__).resolve().parents[1]
BROWSER_DIR = ROOT / "tests" / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


def _skip_reason() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (run scripts/install_browser_deps.sh)"
    if shutil.which("node") is None:
        return "node is not installed (run scripts/install_browser_deps.sh)"
    if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        return "npm playwright-core is not installed in tests/browser (run scripts/install_browser_deps.sh)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_up(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dagster dev exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=5):
                return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"dagster dev did not answer on {url} within {timeout}s")


def _dagster_dev(port: int, env: dict[str, str], log: Any, how: str = "make ui") -> subprocess.Popen:
    """The UI server in the repository root, started as a user would: ``make ui`` (dg dev on
    workspace.yaml) or a bare ``dagster dev`` (no -w: whatever decides the workspace there,
    workspace.yaml or a [tool.dagster]/[tool.dg] table that would override it, is tested)."""
    if how == "make ui":
        # -o: take the venv's install stamp as it is (this interpreter is the installed one)
        cmd = ["make", "-o", ".venv/.installed-stamp", "ui", f"UI_PORT={port}"]
    else:
        cmd = [str(Path(sys.executable).with_name("dagster")), "dev", "-h", "127.0.0.1", "-p", str(port)]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, preexec_fn=_sigint_as_in_a_terminal)


def _sigint_as_in_a_terminal() -> None:
    # A test run started in the background of a shell without job control inherits SIGINT
    # ignored (POSIX), and Python keeps an ignored SIGINT ignored: Ctrl-C in a terminal
    # reaches a process whose SIGINT is at its default, as here.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("how", ["make ui", "dagster dev"])
def test_dagster_dev_in_the_root_serves_both_code_locations(tmp_path: Path, how: str) -> None:
    if how == "make ui" and shutil.which("make") is None:
        pytest.skip("make is not installed")
    home = tmp_path / "home"
    home.mkdir()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DAGSTER_HOME": str(home), "EMBED_ASSETS_STORE": str(tmp_path / "store"),
           "EMBED_ASSETS_MODEL": "hash-bow"}
    query = ("{ workspaceOrError { ... on Workspace { locationEntries { name "
             "locationOrLoadError { __typename } } } } }")
    with open(tmp_path / "dagster_dev.log", "w") as log:
        proc = _dagster_dev(port, env, log, how)
        try:
            _wait_up(url, proc)
            deadline = time.monotonic() + 180
            while True:  # code servers load after the webserver answers
                req = urllib.request.Request(f"{url}/graphql", data=json.dumps({"query": query}).encode(),
                                             headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=30) as resp:
                    entries = json.loads(resp.read())["data"]["workspaceOrError"]["locationEntries"]
                kinds = {e["name"]: (e["locationOrLoadError"] or {}).get("__typename") for e in entries}
                if all(k is not None for k in kinds.values()) or time.monotonic() > deadline:
                    break
                time.sleep(2)
            assert kinds == {"embed_assets_demo": "RepositoryLocation",
                             "embed_assets_by_section": "RepositoryLocation"}, kinds
            # Ctrl-C in the terminal (SIGINT to the foreground group): the webserver, the
            # daemon and both code servers end, none left to time out on its heartbeat
            # (issue 23.8 saw 45 s of that). Bounded generously: a check, not a timing.
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=120)
            deadline = time.monotonic() + 120
            while _group_alive(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.5)
            assert not _group_alive(proc.pid), _group_alive(proc.pid)
        finally:
            _stop(proc)


def _group_alive(pgid: int) -> list[str]:
    """The processes of a group still running (zombies left out)."""
    out = subprocess.run(["ps", "-o", "stat=,args=", "-g", str(pgid)], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.strip() and not line.split()[0].startswith("Z")]


def _stop(proc: subprocess.Popen) -> None:
    # dagster dev starts a webserver, a daemon and code servers in its own session:
    # signal the whole group (ours alone), then make sure.
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def test_materialise_from_the_ui_shows_the_new_lance_version(tmp_path: Path) -> None:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    home = tmp_path / "home"
    home.mkdir()
    store_dir = tmp_path / "store"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DAGSTER_HOME": str(home), "EMBED_ASSETS_STORE": str(store_dir),
           # The UI flow is under test here, not the model: the hash embedder keeps it fast.
           "EMBED_ASSETS_MODEL": "hash-bow"}
    log = open(tmp_path / "dagster_dev.log", "w")  # noqa: SIM115 - closed in finally
    proc = _dagster_dev(port, env, log)
    try:
        _wait_up(url, proc)
        out = subprocess.run(
            ["node", str(BROWSER_DIR / "materialize_and_read_version.js"), url],
            cwd=BROWSER_DIR, capture_output=True, text=True, timeout=420,
            env={**os.environ, "CHROMIUM": CHROMIUM, "SCREENSHOT": str(tmp_path / "failure.png")})
        dev_log = (tmp_path / "dagster_dev.log").read_text()[-3000:]
        assert out.returncode == 0, f"{out.stdout}\n{out.stderr}\n{dev_log}"
        seen = json.loads(out.stdout.strip().splitlines()[-1])
        store = Store(str(store_dir))
        table = store.table("debian_embeddings")
        assert seen["version"] == table.version == 1
        # the run launched from the page is the run recorded with that version
        assert seen["runId"] == run_for_version(store, "debian_embeddings", seen["version"])
    finally:
        _stop(proc)
        log.close()


CHECKS_QUERY = """
query ($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
      assetChecksOrError {
        ... on AssetChecks { checks { name executionForLatestMaterialization { runId status } } }
      }
    }
  }
}"""


def _graphql(url: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(f"{url}/graphql",
                                 data=json.dumps({"query": query, "variables": variables}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())["data"]


def test_rollback_from_the_asset_page_launchpad(tmp_path: Path) -> None:
    """From the embeddings asset page to its rollback job's Launchpad, Launch Run with the
    config as it opens (to: previous), then the asset page shows the new version and the
    checks evaluated on it."""
    reason = _skip_reason() or (None if shutil.which("make") else "make is not installed")
    if reason:
        pytest.skip(reason)
    from embed_assets._demo import demo_source

    home = tmp_path / "home"
    home.mkdir()
    store_dir = tmp_path / "store"
    env = {**os.environ, "DAGSTER_HOME": str(home), "EMBED_ASSETS_STORE": str(store_dir),
           "EMBED_ASSETS_MODEL": "hash-bow", "VIRTUAL_ENV": sys.prefix}
    # Two versions through Dagster: the slice, then the slice less 540 packages.
    fewer = tmp_path / "fewer.parquet"
    demo_source().head(1500).write_parquet(fewer)
    dg = str(Path(sys.executable).with_name("dg"))
    cfg = json.dumps({"ops": {"debian__descriptions": {"config": {"path": str(fewer)}}}})
    for extra in ([], ["--config-json", cfg]):
        p = subprocess.run([dg, "launch", "--assets", "debian/descriptions,debian/embeddings", *extra],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-3000:]
    table = Store(str(store_dir)).table("debian_embeddings")
    assert [v.version for v in table.versions()] == [1, 2]

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    shots = tmp_path / "shots"
    shots.mkdir()
    log = open(tmp_path / "dagster_dev.log", "w")  # noqa: SIM115 - closed in finally
    proc = _dagster_dev(port, env, log)
    try:
        _wait_up(url, proc)
        out = subprocess.run(
            ["node", str(BROWSER_DIR / "rollback_from_asset_page.js"), url, "3"],
            cwd=BROWSER_DIR, capture_output=True, text=True, timeout=420,
            env={**os.environ, "CHROMIUM": CHROMIUM, "SCREENSHOT_DIR": str(shots)})
        dev_log = (tmp_path / "dagster_dev.log").read_text()[-3000:]
        assert out.returncode == 0, f"{out.stdout}\n{out.stderr}\n{dev_log}"
        seen = json.loads(out.stdout.strip().splitlines()[-1])
        # the Launchpad opened with the default, to: previous, and nothing was typed
        assert "previous" in (seen["config"] or ""), seen
        # the asset page shows the version the rollback made, equal to v1
        assert seen["version"] == table.version == 3
        assert table.read(3).sort_by("package").equals(table.read(1).sort_by("package"))
        assert seen["runId"] == run_for_version(Store(str(store_dir)), "debian_embeddings", 3)
        # every check was evaluated in that run, on that version (the checks tab's data)
        data = _graphql(url, CHECKS_QUERY, {"key": {"path": ["debian", "embeddings"]}})
        checks = data["assetNodeOrError"]["assetChecksOrError"]["checks"]
        assert len(checks) == 6
        for c in checks:
            ex = c["executionForLatestMaterialization"]
            assert ex is not None and ex["runId"] == seen["runId"], c
        assert {c["name"]: c["executionForLatestMaterialization"]["status"] for c in checks
                }["vectors_finite"] == "SUCCEEDED"
        # and the checks tab says so: each check's status, none "Not evaluated"
        assert seen["checks"] == {"vectors_finite": "Succeeded", "vector_dimension": "Succeeded",
                                  "no_zero_vectors": "Succeeded", "unique_keys": "Succeeded",
                                  "index_freshness": "Succeeded",
                                  # 540 packages came back: the space moved vs v2 (a WARN)
                                  "drift": "Failed"}, seen["checks"]
    finally:
        _stop(proc)
        log.close()


def test_restore_a_version_chosen_in_the_launchpad_with_nothing_typed(tmp_path: Path) -> None:
    """Issue 24's floor: from the embeddings asset page to the Launchpad of its restore job,
    open the Partition menu (the table's versions with rows, model, run and time), click
    v1, Launch Run: the new latest version equals v1, and the asset page says so."""
    reason = _skip_reason() or (None if shutil.which("make") else "make is not installed")
    if reason:
        pytest.skip(reason)
    from embed_assets._demo import demo_source

    home = tmp_path / "home"
    home.mkdir()
    store_dir = tmp_path / "store"
    env = {**os.environ, "DAGSTER_HOME": str(home), "EMBED_ASSETS_STORE": str(store_dir),
           "EMBED_ASSETS_MODEL": "hash-bow", "VIRTUAL_ENV": sys.prefix}
    fewer = tmp_path / "fewer.parquet"
    demo_source().head(1500).write_parquet(fewer)
    dg = str(Path(sys.executable).with_name("dg"))
    cfg = json.dumps({"ops": {"debian__descriptions": {"config": {"path": str(fewer)}}}})
    for extra in ([], ["--config-json", cfg]):
        p = subprocess.run([dg, "launch", "--assets", "debian/descriptions,debian/embeddings", *extra],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-3000:]
    table = Store(str(store_dir)).table("debian_embeddings")
    assert [(v.version, v.rows) for v in table.versions()] == [(1, 2040), (2, 1500)]

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    shots = tmp_path / "shots"
    shots.mkdir()
    log = open(tmp_path / "dagster_dev.log", "w")  # noqa: SIM115 - closed in finally
    proc = _dagster_dev(port, env, log)
    try:
        _wait_up(url, proc)
        out = subprocess.run(
            ["node", str(BROWSER_DIR / "restore_a_version_from_the_launchpad.js"), url, "1", "3"],
            cwd=BROWSER_DIR, capture_output=True, text=True, timeout=420,
            env={**os.environ, "CHROMIUM": CHROMIUM, "SCREENSHOT_DIR": str(shots)})
        dev_log = (tmp_path / "dagster_dev.log").read_text()[-3000:]
        assert out.returncode == 0, f"{out.stdout}\n{out.stderr}\n{dev_log}"
        seen = json.loads(out.stdout.strip().splitlines()[-1])
        # the menu offered both versions, each named with its rows, model, run and time
        assert [c.split(" | ")[:3] for c in seen["choices"]] == [
            ["v1", "2040 rows", "hash-bow:64"], ["v2", "1500 rows", "hash-bow:64"]], seen["choices"]
        assert seen["picked"].startswith("v1 | 2040 rows") and "run " in seen["picked"]
        # picking it (nothing typed) put the version into the run config
        assert "to: '1'" in (seen["config"] or ""), seen["config"]
        # the new latest equals v1, made by the run launched from the page
        assert seen["version"] == table.version == 3
        assert table.read(3).sort_by("package").equals(table.read(1).sort_by("package"))
        assert seen["runId"] == run_for_version(Store(str(store_dir)), "debian_embeddings", 3)
        # the asset page said what a user wants before the click: model, latest version, picture
        assert "Model hash-bow:64" in seen["overview"] and "Latest version when" in seen["overview"]
        assert (shots / "2-version-menu.png").exists() and (shots / "4-asset-after.png").exists()
    finally:
        _stop(proc)
        log.close()
