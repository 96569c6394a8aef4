"""See what a run removed and why: the report only reads a finished run and draws it.

- :func:`write_report`: ``OUT/report.html``, one self-contained page (funnel, score histograms,
  thumbnails per removal reason, duplicate groups, errors).
- :func:`to_documents` / :func:`write_documents`: kept samples as ``id``/``text``/``metadata``
  documents (datatrove and NeMo Curator fields), as Parquet or JSONL.

Changing thresholds lives elsewhere: :func:`pixsieve.run.sweep.sweep` counts what other
thresholds would keep, :func:`pixsieve.refilter.refilter` writes a new run with them.
"""

from __future__ import annotations

from pixsieve.report.documents import iter_documents, to_documents, write_documents
from pixsieve.report.html import write_report
from pixsieve.run.finished import FinishedRun, RunError

__all__ = [
    "FinishedRun",
    "RunError",
    "iter_documents",
    "to_documents",
    "write_documents",
    "write_report",
]
