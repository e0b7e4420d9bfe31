"""A real `tailor ui` process and Debian's Chromium (the `browser` fixture of tests/conftest.py) driven by Playwright.

Screenshots of every page go to build/ui-screenshots/ (the test artifacts; docs/img/ holds copies of the main
ones) together with page-times.json, the page response times measured while a job trains.
"""

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

import pytest

SHOTS = Path(__file__).resolve().parents[2] / "build" / "ui-screenshots"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class UiServer:
    """`tailor ui` in a subprocess: start, stop (the jobs it started keep running), start again."""

    def __init__(self, workspace: Path, root: Path):
        self.workspace, self.root, self.port = workspace, root, _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None
        self.log = workspace.parent / "ui.log"

    def start(self) -> None:
        env = {**os.environ, "TAILOR_DEVICE": "cpu", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        self.proc = subprocess.Popen([sys.executable, "-m", "tailor.cli", "ui", "--workspace", str(self.workspace),
                                      "--root", str(self.root), "--port", str(self.port), "--max-upload-mb", "1"],
                                     env=env, stdout=self.log.open("a"), stderr=subprocess.STDOUT)
        end = time.monotonic() + 60
        while time.monotonic() < end:
            try:
                urllib.request.urlopen(self.url + "/jobs", timeout=2)
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("tailor ui exited:\n" + self.log.read_text())
                time.sleep(0.2)
        raise RuntimeError("tailor ui did not answer within 60 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)

    def stop_jobs(self) -> None:
        from tailor.ui.jobs import JobTable

        for job in JobTable(self.workspace).list(states=("running",)):
            try:
                os.killpg(job.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    base = tmp_path_factory.mktemp("ui")
    (base / "shared").mkdir()
    server = UiServer(base / "workspace", base / "shared")
    server.start()
    yield server
    server.stop()
    server.stop_jobs()


@pytest.fixture
def page(browser):  # `browser`: tests/conftest.py
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)  # wait_for_function evaluates strings
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    yield pg
    context.close()


@pytest.fixture(scope="session")
def shots():
    if SHOTS.exists():
        shutil.rmtree(SHOTS)
    SHOTS.mkdir(parents=True)

    def shot(page, name: str) -> None:
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    shot.dir = SHOTS
    shot.save_json = lambda name, data: (SHOTS / name).write_text(json.dumps(data, indent=2))
    return shot
