"""See what a run removed and why, and change its thresholds without running a model again.

- :func:`write_report`: ``OUT/report.html``, one self-contained page (funnel, score histograms,
  thumbnails per removal reason, duplicate groups, errors).
- :func:`sweep`: retained counts for combinations of thresholds, from cached scores/embeddings.
- :func:`refilter`: a new run directory re-decided with new thresholds (members copied).
- :func:`to_documents` / :func:`write_documents`: kept samples as ``id``/``text``/``metadata``
  documents (datatrove and NeMo Curator fields), as Parquet or JSONL.
"""

from __future__ import annotations

from pixsieve.report.documents import iter_documents, to_documents, write_documents
from pixsieve.report.fates import OFF, Thresholds
from pixsieve.report.html import write_report
from pixsieve.report.refilter import refilter
from pixsieve.report.rundir import FinishedRun, RunError
from pixsieve.report.sweep import SweepResult, sweep

__all__ = [
    "OFF",
    "FinishedRun",
    "RunError",
    "SweepResult",
    "Thresholds",
    "iter_documents",
    "refilter",
    "sweep",
    "to_documents",
    "write_documents",
    "write_report",
]
