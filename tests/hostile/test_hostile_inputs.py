"""Hostile inputs: every key built in comes out exactly once, memory and time stay bounded.

Each run is ``pixsieve curate --skip embed`` with default settings (unless the case is about a
setting), in its own forked process (see ``conftest.py``): exit code 0, no traceback, peak RSS
under :data:`~conftest.MEMORY_TARGET`.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import pytest
from hostile import inputs
from hostile.harness import MEMORY_TARGET, CurateServer, Result
from hostile.inputs import Shard

from pixsieve.cli.exits import COMPLETED, SHARD_ERRORS


def assert_clean(result: Result) -> None:
    """Finished, no traceback, within the memory target."""
    assert not result.timed_out, result.output[-2000:]
    assert result.rc in (COMPLETED, SHARD_ERRORS), result.output[-2000:]  # exits.py
    assert "Traceback" not in result.output, result.output[-4000:]
    assert result.max_rss < MEMORY_TARGET, f"peak RSS {result.max_rss / 2**20:.0f} MiB"


def full_reason(row: dict) -> str:
    """A row's reason code and detail as one string (``shard_error: corrupt_shard: ...``)."""
    detail = row.get("reason_detail")
    return f"{row['reason'] or ''}: {detail}" if detail else row["reason"] or ""


def check_manifest(out: Path, shards: list[Shard]) -> list[dict]:
    """Every built key exactly once per shard, the expected reasons and shard rows."""
    rows = inputs.manifest_json(str(out))
    by_source: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_source[r["source"].rsplit("/", 1)[-1]].append(r)
    assert set(by_source) <= {s.name for s in shards}
    for s in shards:
        got = by_source[s.name]
        samples = [r for r in got if r["position"] >= 0]
        assert sorted(r["key"] for r in samples) == sorted(s.keys), s.name
        assert len({r["position"] for r in samples}) == len(samples), s.name
        assert len([r for r in got if r["position"] < 0]) == s.shard_rows, (s.name, got[-1:])
        for r in got:
            assert r["status"] in ("kept", "removed", "error")
            assert (r["reason"] is None) == (r["status"] == "kept"), r
        for key, prefix in s.reasons.items():
            reasons = [full_reason(r) for r in samples if r["key"] == key]
            assert reasons and all(x.startswith(prefix) for x in reasons), (s.name, key, reasons)
    return rows


@pytest.fixture(scope="module")
def zoo_run(curate: CurateServer, tmp_path_factory: pytest.TempPathFactory):
    """One run over every hostile shard, a FIFO named b.tar and a link to /dev/zero."""
    root = tmp_path_factory.mktemp("zoo")
    shards = inputs.zoo()
    inputs.write(shards, str(root / "in"))
    os.mkfifo(root / "in" / "b.tar")  # opening it would block forever
    os.symlink("/dev/zero", root / "in" / "zero.tar")  # reading it would never end
    out = root / "out"
    argv = ["curate", str(root / "in"), "-o", str(out), "--skip", "embed", "--no-progress"]
    result = curate.run(argv, timeout=300, name="zoo (all hostile shards)")
    return root, shards, out, argv, result


def test_every_key_of_every_hostile_shard_exactly_once(zoo_run):
    _, shards, out, _, result = zoo_run
    assert_clean(result)
    rows = check_manifest(out, shards)
    kept = {r["key"] for r in rows if r["status"] == "kept"}
    assert {"good000", "gi6", "cata000", "catb002", "after002"} <= kept
    assert not {"dj0", "dj1", "dj2"} & kept  # unparsable sidecars: errors, checked above
    assert "not a regular file" in result.stderr  # the FIFO and the device are reported


def test_damage_is_reported_per_shard(zoo_run):
    _, _, out, _, _ = zoo_run
    record = json.loads((out / "run.json").read_text())
    errors = {e["task"].rsplit("/", 1)[-1]: e["error"] for e in record["shard_errors"]}
    assert errors["flipped.tar"].startswith("corrupt_header")
    assert errors["misaligned.tar"].startswith("corrupt_header")
    assert errors["deflate.tar.gz"].startswith("corrupt_shard")
    assert errors["trailing.tar.gz"].startswith("trailing_data")
    assert errors["after.tar"].startswith("trailing_data")
    assert errors["empty.tar"].startswith("not_a_tar")
    assert errors["photo.tar"].startswith("not_a_tar")
    for clean in ("good.tar", "cat.tar", "noend.tar", "twomembers.tar.gz", "names.tar"):
        assert clean not in errors
    rows = inputs.manifest_json(str(out))
    deep = next(r for r in rows if r["key"] == "dj0")
    assert deep["reason"] == "invalid_json" and "nested too deeply" in deep["reason_detail"]


def test_a_rerun_resumes_every_shard_even_the_damaged_ones(curate, zoo_run):
    _, _, out, argv, _ = zoo_run
    before = sorted(inputs.manifest_json(str(out)), key=lambda r: (r["source"], r["position"]))
    result = curate.run(argv, timeout=120, name="zoo re-run (resume)")
    assert_clean(result)
    record = json.loads((out / "run.json").read_text())
    assert record["tasks"]["score"]["resumed"] == record["tasks"]["score"]["total"]
    after = sorted(inputs.manifest_json(str(out)), key=lambda r: (r["source"], r["position"]))
    assert after == before


def test_big_members_stay_within_the_memory_target(curate, tmp_path):
    """Two shards of 120 MB samples (zeros, so all but one are exact duplicates), side by side."""
    (tmp_path / "in").mkdir()
    shards = [inputs.big_members(str(tmp_path / "in" / f"{p}.tar.gz")) for p in ("ba", "bb")]
    out = tmp_path / "out"
    argv = ["curate", str(tmp_path / "in"), "-o", str(out), "--skip", "embed", "--no-progress"]
    result = curate.run(argv, timeout=300, name="2 shards of 3 x 120 MB")
    assert_clean(result)
    check_manifest(out, shards)


def test_a_decode_bomb_times_out_alone(curate, tmp_path):
    """A progressive JPEG repeating one scan 20,000 times: decode_timeout, batch unharmed."""
    bomb = inputs.scan_bomb()
    members = [(f"ok{i}.jpg", inputs.jpeg(3000 + i)) for i in range(3)]
    members += [("bomb.jpg", bomb)] + [(f"ok{i}.jpg", inputs.jpeg(3000 + i)) for i in range(3, 6)]
    keys = [n.split(".")[0] for n, _ in members]
    shard = Shard("bomb.tar", inputs.tar_bytes(members), keys, {"bomb": "decode_timeout"})
    inputs.write([shard], str(tmp_path / "in"))
    (tmp_path / "limits.toml").write_text("[read]\ndecode_timeout = 0.5\n")
    out = tmp_path / "out"
    argv = ["curate", str(tmp_path / "in"), "-o", str(out), "--skip", "embed", "--no-progress"]
    result = curate.run(
        [*argv, "--config", str(tmp_path / "limits.toml")], timeout=120, name="scan bomb"
    )
    assert_clean(result)
    rows = check_manifest(out, [shard])
    assert {r["key"] for r in rows if r["status"] == "kept"} == set(keys) - {"bomb"}
    record = json.loads((out / "run.json").read_text())
    assert record["counters"]["decode"]["seconds"] < 3  # one 0.5 s deadline, no second try
