"""Exit codes of ``pixsieve curate``: one table, used by the code, its help and the docs.

- 0: completed; samples that failed are ``error`` rows in the manifest.
- 1: failed: the run could not start or stopped (a model unavailable, the output not
  writable, a missing extra such as Ray, an unexpected error).
- 2: bad arguments: an unknown or invalid option, a bad config file, inputs not found.
- 3: completed with shard errors: some input files or export partitions failed as a whole
  (``run.json`` → ``shard_errors``; each has its rows in the manifest).
- 4: nothing could be read: no sample was found in any input.
- 130: interrupted (Ctrl-C); re-running the same command resumes.
"""

from __future__ import annotations

from typing import Any

COMPLETED = 0
FAILED = 1
BAD_ARGUMENTS = 2
SHARD_ERRORS = 3
NOTHING_READ = 4
INTERRUPTED = 130

EXIT_CODES_HELP = (
    "Exit codes: 0 completed (sample errors are manifest rows), 1 failed, 2 bad arguments, "
    "3 completed with shard errors, 4 nothing could be read, 130 interrupted."
)
EXIT_MESSAGES = {
    SHARD_ERRORS: "completed with shard errors: see the table above and run.json shard_errors",
    NOTHING_READ: "nothing could be read: no sample was found in any input",
}
INTERRUPTED_MESSAGE = (
    "interrupted: finished shards are kept; re-running the same command resumes from them"
)


def exit_code(record: dict[str, Any]) -> int:
    """The exit code of a finished run from its ``run.json`` record."""
    totals = record.get("totals") or {}
    unreadable = (record.get("inputs") or {}).get("unreadable", 0)
    if totals.get("input", 0) - unreadable <= 0:
        return NOTHING_READ
    if record.get("shard_errors"):
        return SHARD_ERRORS
    return COMPLETED
