"""`python -m tailor.ui.worker JOB_DIR`: run one UI job's command and record how it ended.

Started by tailor.ui.jobs.Runner in its own session. Lowers its CPU priority (the UI and the user's other work
stay responsive while a job uses every core), runs the command from JOB_DIR/job.json with its output in
JOB_DIR/log.txt, forwards SIGTERM to it, and writes JOB_DIR/exit.json when it ends. A worker killed outright
writes nothing: the runner then marks the job failed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def main(job_dir: str) -> int:
    d = Path(job_dir)
    spec = json.loads((d / "job.json").read_text(encoding="utf-8"))
    if spec.get("nice"):
        os.nice(int(spec["nice"]))
    with (d / "log.txt").open("ab") as log:
        try:
            proc = subprocess.Popen(spec["argv"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=spec.get("cwd"))
        except OSError as exc:  # the command could not start at all: say so in the job's log
            log.write(f"error: cannot run {spec['argv'][0]}: {exc}\n".encode())
            rc = 127
        else:
            signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
            rc = proc.wait()
    tmp = d / "exit.json.tmp"
    tmp.write_text(json.dumps({"rc": rc, "finished": time.time()}), encoding="utf-8")
    tmp.replace(d / "exit.json")  # whole or absent: the runner never reads half a file
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
