"""Heavy optional libraries are imported where they are used, not by ``import pixsieve``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BLOCKED_FAISS = """
import json, sys
sys.modules["faiss"] = None  # `import faiss` now raises ImportError, as on a machine without it
import numpy as np
import pixsieve, pixsieve.cli, pixsieve.curate, pixsieve.dedup, pixsieve.stages
from pixsieve import Pipeline
from pixsieve.dedup import SemanticDedupConfig, find_duplicates
from pixsieve.stages import DecodeStage

result = Pipeline([DecodeStage(threads=1)]).run(sys.argv[2:], sys.argv[1], progress=False)
try:
    x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
    find_duplicates(x, SemanticDedupConfig(n_clusters=4))
    error = None
except ImportError as e:
    error = str(e)
print(json.dumps({"kept": result.counts["kept"], "error": error}))
"""


def test_pixsieve_imports_and_runs_without_faiss(tmp_path: Path, good_shards: list[Path]) -> None:
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    args = [str(tmp_path / "out"), *map(str, good_shards)]
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKED_FAISS, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["kept"] > 0  # a run without semantic dedup needs no faiss
    assert out["error"] is not None and "pip install faiss-cpu" in out["error"]
