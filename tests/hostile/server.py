"""Fork server for the hostile suite: import pixsieve once, run each command in a fresh fork.

Started once per test session (``python server.py``), it imports the CLI (and with it torch,
Pillow, pyarrow: seconds), then reads one JSON command per line from stdin: ``{"runs": [...]}``.
Each run is forked from this warm process, so it starts in milliseconds yet is a process of its
own, under its own address-space cap (``RLIMIT_AS``) and wall-clock limit, with stdout and
stderr in files. The runs of one command start together (to race two runs on one output) and
the reply, one JSON line, gives per run: exit code, peak RSS (``wait4``), seconds, timed out.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time
import traceback
from typing import Any


def _child(run: dict[str, Any], cli: Any) -> None:
    """In the fork: redirect, cap, run the CLI, exit with its code (never returns)."""
    code = 1
    try:
        out = os.open(run["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        err = os.open(run["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.environ.update(run.get("env") or {})
        os.chdir(run["cwd"])
        cap = int(run["address_space"])
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        try:
            cli.main(args=run["argv"], prog_name="pixsieve", standalone_mode=True)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _wait(pid: int, started: float, timeout: float) -> dict[str, Any]:
    timed_out = False
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() - started > timeout:
            os.kill(pid, signal.SIGKILL)
            _, status, usage = os.wait4(pid, 0)
            timed_out = True
            break
        time.sleep(0.01)
    return {
        "rc": os.waitstatus_to_exitcode(status),
        "max_rss": usage.ru_maxrss * 1024,
        "seconds": round(time.monotonic() - started, 3),
        "timed_out": timed_out,
    }


def main() -> None:
    """Import once, then serve fork-and-run commands until stdin closes."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import fullfs  # noqa: F401 - registers the fullfs:// filesystem in every fork

    import pixsieve.cli as cli
    import pixsieve.curate
    import pixsieve.report  # noqa: F401 - warm: nothing heavy is imported after the fork

    with open("/proc/self/statm") as f:
        vm = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    print(json.dumps({"ready": True, "vm_bytes": vm}), flush=True)
    for line in sys.stdin:
        runs = json.loads(line)["runs"]
        sys.stdout.flush()
        sys.stderr.flush()
        started = []
        for run in runs:
            t0 = time.monotonic()
            pid = os.fork()
            if pid == 0:
                _child(run, cli)
            started.append((pid, t0, float(run["timeout"])))
        results = [_wait(pid, t0, timeout) for pid, t0, timeout in started]
        print(json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
