"""The hostile suite's harness: every ``pixsieve curate`` runs in its own process.

A fork server (``server.py``) imports pixsieve once; each run is a fork of it, under an
address-space cap (a guard against runaway allocation) and a wall-clock limit, and reports its
exit code, peak resident memory and seconds. Tests then read the manifest and assert that every
key built into the input appears exactly once, and that nothing printed a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GiB = 1 << 30
MEMORY_TARGET = int(1.5 * GiB)  # the whole process tree of curate --skip embed, defaults
HERE = Path(__file__).parent
FIGURES: list[dict[str, Any]] = []  # printed at the end of the session (see BENCHMARKS.md)


@dataclass
class Result:
    """What one forked ``pixsieve`` run did."""

    rc: int
    max_rss: int
    seconds: float
    timed_out: bool
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        """stdout and stderr together."""
        return self.stdout + self.stderr


class CurateServer:
    """Runs ``pixsieve`` commands as forks of one warm interpreter."""

    def __init__(self, tmp: Path) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parents[1]), *sys.path])}
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "server.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        hello = json.loads(self.proc.stdout.readline())
        self.vm_bytes = int(hello["vm_bytes"])
        self.tmp = tmp
        self.count = 0

    def run_many(
        self,
        argvs: list[list[str]],
        timeout: float = 120,
        env: dict[str, str] | None = None,
        name: str = "",
    ) -> list[Result]:
        """Start every command at once (forks), wait for all; each gets its own result."""
        runs = []
        for argv in argvs:
            self.count += 1
            base = self.tmp / f"run{self.count:03d}"
            runs.append(
                {
                    "argv": argv,
                    "cwd": str(self.tmp),
                    "timeout": timeout,
                    "env": env or {},
                    "stdout": f"{base}.out",
                    "stderr": f"{base}.err",
                    # a guard against runaway allocation; the assertion is on peak RSS
                    "address_space": self.vm_bytes + 6 * GiB,
                }
            )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"runs": runs}) + "\n")
        self.proc.stdin.flush()
        replies = json.loads(self.proc.stdout.readline())
        results = []
        for run, reply in zip(runs, replies, strict=True):
            results.append(
                Result(
                    stdout=Path(run["stdout"]).read_text(errors="replace"),
                    stderr=Path(run["stderr"]).read_text(errors="replace"),
                    **reply,
                )
            )
            FIGURES.append({"case": name or " ".join(run["argv"][:2]), **reply})
        return results

    def run(self, argv: list[str], **kw: Any) -> Result:
        """Run one command."""
        return self.run_many([argv], **kw)[0]

    def close(self) -> None:
        """Stop the server."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
