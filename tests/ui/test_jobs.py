"""The job table and runner: real subprocesses, state on disk, queueing per device, stop, kill, re-attach."""

import json
import os
import signal
import sys
import time

import pytest

from tailor.errors import TailorError
from tailor.ui.jobs import JobTable, Runner


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def wait_until(pred, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.fixture
def runner(tmp_path):
    r = Runner(JobTable(tmp_path), nice=5)
    yield r
    for job in r.table.list(states=("running",)):
        r.stop(job.id)


def test_job_runs_at_lower_priority_and_keeps_its_log(runner):
    job = runner.table.add("t", "print", py("import os; print('hello'); print('nice', os.nice(0))"))
    done = runner.wait(job.id)
    assert done.state == "done" and done.rc == 0
    log = runner.table.log_tail(job.id)
    assert "hello" in log
    assert f"nice {os.nice(0) + 5}" in log  # the worker lowered the priority before running the command


def test_failure_keeps_exit_code_and_last_lines(runner):
    job = runner.table.add("t", "fail", py("import sys; print('last words'); sys.exit(3)"))
    done = runner.wait(job.id)
    assert (done.state, done.rc) == ("failed", 3)
    assert runner.table.log_tail(job.id).endswith("last words")


def test_one_job_per_device_the_rest_queued_in_order(runner):
    slow = runner.table.add("train", "a", py("import time; time.sleep(1.5)"), device="cpu")
    second = runner.table.add("train", "b", py("print('b')"), device="cpu")
    other = runner.table.add("train", "c", py("print('c')"), device="cuda:0")
    runner.tick()
    assert runner.table.get(slow.id).state == "running"
    assert runner.table.get(second.id).state == "queued"
    assert runner.table.get(other.id).state == "running"  # another device has its own slot
    assert runner.wait(second.id).state == "done"
    a, b = runner.table.get(slow.id), runner.table.get(second.id)
    assert b.started >= a.finished


def test_dependent_job_waits_and_fails_with_its_dependency(runner):
    first = runner.table.add("t", "first", py("import sys; sys.exit(1)"))
    then = runner.table.add("t", "then", py("print('never')"), after=first.id)
    job = runner.wait(then.id)
    assert job.state == "failed" and "job %d" % first.id in job.note
    assert runner.table.log_tail(then.id) == ""  # never started


def test_stop_marks_stopped(runner):
    job = runner.table.add("t", "sleep", py("import time; print('started', flush=True); time.sleep(60)"))
    runner.tick()
    wait_until(lambda: "started" in runner.table.log_tail(job.id))
    runner.stop(job.id)
    assert runner.wait(job.id, timeout=20).state == "stopped"


def test_killed_job_is_failed_with_its_log(runner):
    job = runner.table.add("t", "sleep", py("import time; print('working', flush=True); time.sleep(60)"))
    runner.tick()
    wait_until(lambda: "working" in runner.table.log_tail(job.id))
    os.killpg(runner.table.get(job.id).pid, signal.SIGKILL)  # worker and command die without a word
    done = runner.wait(job.id, timeout=20)
    assert done.state == "failed" and "without an exit status" in done.note
    assert "working" in runner.table.log_tail(job.id)


def test_a_new_runner_reattaches_to_running_jobs(tmp_path):
    first = Runner(JobTable(tmp_path))
    job = first.table.add("t", "sleep", py("import time; time.sleep(1.5); print('finished')"))
    first.tick()
    del first  # the UI process goes away; the job's own session keeps it running
    second = Runner(JobTable(tmp_path))
    second.tick()
    assert second.table.get(job.id).state == "running"
    done = second.wait(job.id)
    assert done.state == "done" and "finished" in second.table.log_tail(job.id)
    assert json.loads((second.table.dir(job.id) / "exit.json").read_text())["rc"] == 0


def test_unknown_job_is_a_clear_error(tmp_path):
    with pytest.raises(TailorError, match="no job 42"):
        JobTable(tmp_path).get(42)


def test_command_that_cannot_start_fails_with_the_reason(runner):
    job = runner.table.add("t", "missing", ["/nonexistent/tool", "--x"])
    done = runner.wait(job.id)
    assert (done.state, done.rc, done.note) == ("failed", 127, None)
    assert "cannot run /nonexistent/tool" in runner.table.log_tail(job.id)


def test_one_ui_per_workspace(tmp_path):
    from tailor.ui.jobs import lock_workspace

    held = lock_workspace(tmp_path)
    with pytest.raises(TailorError, match="already running on the workspace"):
        lock_workspace(tmp_path)
    held.close()
    lock_workspace(tmp_path).close()  # free again once the first UI is gone


def test_ui_device_reaches_every_job(tmp_path):
    from tailor.ui.app import create_app

    app = create_app(tmp_path, device="cpu")
    runner = app.state.ctx.runner
    job = runner.table.add("t", "env", py("import os; print('device', os.environ['TAILOR_DEVICE'])"), device="cpu")
    assert runner.wait(job.id).state == "done"
    assert "device cpu" in runner.table.log_tail(job.id)
