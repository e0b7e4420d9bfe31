"""A `tailor serve` process on a loopback port, for the tests that drive it with the official client."""

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def serve_process():
    """`with serve_process(ARGS, LOG) as url:` runs `tailor serve ARGS` for the block."""
    return _serve


@contextmanager
def _serve(args: list[str], log_path: Path):
    """Start `tailor serve ARGS --port P`, wait until /ready answers, yield its base URL, stop it."""
    port = _free_port()
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "tailor.cli", "serve", *args, "--port", str(port)],
                                stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        t0 = time.monotonic()
        try:
            while True:
                if proc.poll() is not None:
                    pytest.fail("server exited:\n" + log_path.read_text())
                try:
                    if httpx.get(base + "/ready", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() - t0 < 90, "server did not become ready"
                time.sleep(0.2)
            yield base
        finally:
            proc.terminate()
            proc.wait(timeout=15)


@pytest.fixture(scope="session")
def schemathesis_clean():
    """`schemathesis_clean(server, key, *args)`: fuzz the server's OpenAPI spec; assert no 5xx and no traceback."""

    def run(server: dict, key: str, *args: str, timeout: int = 120) -> None:
        exe = Path(sys.executable).with_name("schemathesis")
        if not exe.exists():
            pytest.skip("schemathesis is not installed (pip install 'tailor[dev]')")
        r = subprocess.run([str(exe), "run", server["url"] + "/openapi.json", "--checks", "not_a_server_error",
                            "--header", f"Authorization: Bearer {key}", "--no-color", *args],
                           capture_output=True, text=True, timeout=timeout, env={**os.environ, "NO_COLOR": "1"})
        assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
        assert " passed" in r.stdout and "errored" not in r.stdout and "failed" not in r.stdout, r.stdout[-3000:]
        assert "Traceback" not in server["log"].read_text()

    return run
