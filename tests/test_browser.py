"""The lab as a student meets it: `labkit up --jupyter`, notebook 00 run in a real browser.

Headless Chromium (Debian's ``chromium``; Playwright's own browser download cannot be had
here) driven by Playwright for Python opens JupyterLab, runs every cell of notebook 00, and
then clicks the live dashboard's *Refresh now* button and waits for the kernel to answer. A
screenshot of the page is saved in the test's temporary directory (the path is printed, and
named in any failure) so a failure can be looked at.

JupyterLab runs on a copy of notebook 00 in that directory, with settings of its own (no
autosave, every cell in the DOM), so outputs never land in the repository's notebook. Its
kernels get the session lab's settings (LABKIT_LAB_DIR, from the root conftest.py) through
`labkit up`, so the notebook reattaches to the session's servers. The server is stopped at
the end (the whole process group this test started).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
# As root, in a container, without a GPU or a network beyond the registries: no sandbox (it
# needs user namespaces Chromium does not get here), no GPU process, no update or field-trial
# traffic, no first-run dialogs.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
NOTEBOOK = "00_lab_tour.ipynb"
SETTINGS = {
    # A save is this test's own (Ctrl-S), after the run: nothing is written while cells run.
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    # Every cell in the DOM, so its prompt and outputs can be read without scrolling to it.
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}
URL = re.compile(r"http://127\.0\.0\.1:(\d+)/lab\?token=(\S+)")


@pytest.fixture
def jupyterlab(lab, tmp_path):
    """`labkit up --jupyter` on a copy of notebook 00; yields (base URL, token); stops it after."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: run `bash containers/bootstrap.sh` (it installs "
                    "Debian's chromium package)")
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(REPO / "notebooks" / NOTEBOOK, work / NOTEBOOK)
    settings = tmp_path / "settings"
    for name, value in SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(value))
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(settings),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    env.pop("JUPYTER_PORT", None)
    env.pop("JUPYTER_TOKEN", None)
    log_path = tmp_path / "jupyterlab.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "labkit.cli", "up", "--jupyter",
                                 "--no-browser", "--notebook-dir", str(work)],
                                env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 180   # a loaded machine is slow, not wrong
        while True:
            m = URL.search(log_path.read_text())
            if m:
                base, token = f"http://127.0.0.1:{m.group(1)}", m.group(2)
                try:
                    with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5):
                        break
                except OSError:
                    pass
            assert proc.poll() is None, f"labkit up --jupyter exited:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, (f"JupyterLab did not answer within 180 s; "
                                                 f"see {log_path}")
            time.sleep(0.3)
        yield base, token, work
    finally:
        os.killpg(proc.pid, signal.SIGTERM)   # labkit and the JupyterLab it runs
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


PROMPTS_JS = """() => Array.from(document.querySelectorAll('.jp-Notebook .jp-CodeCell'))
    .map(c => (c.querySelector('.jp-InputArea-prompt') || {}).textContent || '')"""


def test_notebook_00_runs_in_a_browser_and_its_dashboard_answers(jupyterlab, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    base, token, work = jupyterlab
    shot = tmp_path / "jupyterlab.png"
    print(f"screenshot: {shot}")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(120_000)   # a loaded machine is slow, not wrong
        try:
            page.goto(f"{base}/lab/tree/{NOTEBOOK}?token={token}", wait_until="domcontentloaded")
            expect(page.locator(".jp-Notebook .jp-CodeCell").first).to_be_visible(timeout=180_000)
            _wait_for_idle_kernel(base, token, timeout_s=180)
            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
            page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
            prompts = _wait_for_every_cell(page, timeout_s=300)
            page.screenshot(path=str(shot), full_page=True)
            assert all(re.fullmatch(r"\[\d+\]:", p) for p in prompts), (
                f"cells that did not run (an earlier one failed?): {prompts}; see {shot}")
            tracebacks = page.locator(".jp-OutputArea-output", has_text="Traceback")
            assert tracebacks.count() == 0, f"{tracebacks.first.inner_text()[:2000]}\nsee {shot}"

            # The dashboard's widget rendered, and it answers a click through the kernel.
            status = page.locator(".widget-html", has_text="lab dashboard")
            expect(status).to_have_count(1)
            n = int(re.search(r"refresh #(\d+)", status.inner_text()).group(1))
            page.locator("button.jupyter-button", has_text="Refresh now").click()
            expect(status).to_contain_text(re.compile(rf"refresh #({n + 1}|{n + 2}|{n + 3})\)"),
                                           timeout=120_000)
            expect(page.locator(".widget-html", has_text="follower lag")).to_have_count(1)

            # What the browser ran, saved and read back: no error output, every cell executed.
            page.keyboard.press("Control+s")
            deadline = time.monotonic() + 30
            while True:
                nb = json.loads((work / NOTEBOOK).read_text())
                code = [c for c in nb["cells"] if c["cell_type"] == "code"]
                if all(c["execution_count"] for c in code) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            errors = [o for c in code for o in c["outputs"] if o["output_type"] == "error"]
            assert not errors, f"{errors[0]['ename']}: {errors[0]['evalue']}; see {shot}"
            assert all(c["execution_count"] for c in code), f"not saved as run; see {shot}"
        except Exception:
            page.screenshot(path=str(shot), full_page=True)
            print(f"failed; the page as it was: {shot}")
            raise
        finally:
            page.screenshot(path=str(shot), full_page=True)
            browser.close()


def _wait_for_every_cell(page, timeout_s: float) -> list[str]:
    """The code cells' prompts once nothing runs or waits to run (``[*]``) any more."""
    deadline = time.monotonic() + timeout_s
    while True:
        prompts = page.evaluate(PROMPTS_JS)
        running = [p for p in prompts if "*" in p]
        if prompts and not running and prompts[-1].strip() not in ("", "[ ]:"):
            return prompts
        if not running and any(p.strip() in ("", "[ ]:") for p in prompts) and \
                page.locator(".jp-OutputArea-output", has_text="Traceback").count():
            return prompts    # a cell failed and the run stopped there
        assert time.monotonic() < deadline, f"cells still running after {timeout_s} s: {prompts}"
        time.sleep(0.5)


def _wait_for_idle_kernel(base: str, token: str, timeout_s: float) -> None:
    """Until the notebook's kernel has started and is idle (the server's sessions API says)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with urllib.request.urlopen(f"{base}/api/sessions?token={token}", timeout=10) as r:
            states = [x["kernel"]["execution_state"] for x in json.load(r)]
        if states == ["idle"]:
            return
        assert time.monotonic() < deadline, f"no idle kernel after {timeout_s} s: {states}"
        time.sleep(0.5)
