"""The shared per-task policy: resume, one retry budget for exceptions and process deaths."""

from __future__ import annotations

from pathlib import Path

from executors.helpers import ToyWorker, attempts

from pixsieve.executors.base import Attempts, resumed_results, run_task
from pixsieve.progress import no_progress


def test_run_task_counts_earlier_process_deaths(tmp_path: Path) -> None:
    """Deaths reported by an executor use up the same ``retries + 1`` attempts as exceptions."""
    counter = str(tmp_path / "c")
    worker = ToyWorker(counter, raise_on=(1,), sleep=0)
    ok = run_task(worker, 0, 2, no_progress, crashes=1, error="died")
    assert (ok.attempts, ok.error) == (2, None)  # the death was attempt 1
    bad = run_task(worker, 1, 2, no_progress, crashes=1, error="died")
    assert (bad.attempts, bad.error) == (3, "ValueError: task 1 is bad")
    assert attempts(counter).count("run 1") == 2  # two attempts were left after the death
    gone = run_task(worker, 2, 1, no_progress, crashes=2, error="worker process died")
    assert (gone.attempts, gone.error) == (2, "worker process died")
    assert gone.summary == {"samples": 0, "error": "worker process died", "failed": True}
    assert "run 2" not in attempts(counter)  # no attempt left: straight to fail()


def test_attempts_policy() -> None:
    policy = Attempts(["a", "b"], retries=1)
    assert policy.kwargs(0) == {"crashes": 0, "error": ""}
    assert policy.died(0, "died once") is None  # try again
    assert policy.died(0, "died twice") is None  # no attempt left: run_task records it
    assert policy.kwargs(0) == {"crashes": 2, "error": "died twice"}
    assert policy.died(0, "died in fail") is None  # fail() killed it: one more try
    final = policy.died(0, "died in fail again")
    assert final is not None and (final.task, final.attempts) == ("a", 2)
    assert final.error == "died twice"
    assert final.summary == {
        "samples": 0,
        "error": "died twice; recording the failure: died in fail again",
    }
    assert policy.kwargs(1) == {"crashes": 0, "error": ""}  # other tasks keep their budget


def test_resumed_results_only_when_all_done(tmp_path: Path) -> None:
    seen: list[int] = []
    worker = ToyWorker(str(tmp_path / "c"), done_tasks=(0, 1, 2))
    assert resumed_results(worker, [0, 1, 3], seen.append) is None
    assert seen == []
    done = resumed_results(worker, [0, 1, 2], seen.append)
    assert done is not None and [(r.task, r.resumed, r.attempts) for r in done] == [
        (0, True, 0),
        (1, True, 0),
        (2, True, 0),
    ]
    assert seen == [0, 1, 2]
