"""``pixsieve curate`` from the command line: the real stages end to end, exit codes, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.dataset as ds
import pytest
from click.testing import CliRunner
from fixtures_data import AESTHETIC_PTH, NSFW_PTH

from pixsieve.cli import main

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample"
KNOWN_REASONS = {
    "decode_error", "exact_duplicate", "aesthetic", "nsfw", "semantic_duplicate", "too_small",
    "caption_mismatch",
}  # fmt: skip


def run(*args: str) -> object:
    return CliRunner().invoke(main, ["curate", *args, "--no-progress"], catch_exceptions=False)


def rows(out: Path) -> list[dict]:
    return ds.dataset(str(out / "manifest")).to_table().to_pylist()


def test_skip_embed_is_a_pure_ingest_export(tmp_path):
    out = tmp_path / "out"
    result = run(str(SAMPLE), "-o", str(out), "--skip", "embed", "--samples-per-shard", "5")
    assert result.exit_code == 0, result.output
    assert "kept" in result.output and "decode" in result.output
    manifest = rows(out)
    assert len(manifest) == 14
    assert {r["reason"].split(":")[0] for r in manifest if r["reason"]} == {
        "decode_error", "exact_duplicate",
    }  # fmt: skip
    assert all("aesthetic_score" not in r for r in manifest)
    rec = json.loads((out / "run.json").read_text())
    assert rec["config"]["run"]["skip"] == ["embed"]
    assert rec["decoder"] == "pillow"  # no GPU here: the CPU decoder was chosen
    assert rec["totals"] == {"input": 14, "kept": 12, "removed": 1, "error": 1}
    assert len(list((out / "shards").glob("*.tar"))) == 3


def test_full_pipeline_with_tiny_clip_and_real_heads(tmp_path, tiny_clip_dir):
    out = tmp_path / "out"
    result = run(
        str(SAMPLE), "-o", str(out),
        "--clip-model", str(tiny_clip_dir),
        "--aesthetic-weights", str(AESTHETIC_PTH),
        "--nsfw-weights", str(NSFW_PTH),
        "--aesthetic-min", "0", "--dedup-threshold", "0.999",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = rows(out)
    assert len(manifest) == 14
    decodable = [r for r in manifest if r["status"] != "error" and r["reason"] != "exact_duplicate"]
    assert len(decodable) == 12
    for r in decodable:
        assert r["aesthetic_score"] is not None and 0 < r["nsfw_prob"] < 1, r
        assert -1 <= r["clip_score"] <= 1 and r["caption"], r  # sample/ has .txt captions
    assert {r["reason"].split(":")[0] for r in manifest if r["reason"]} <= KNOWN_REASONS
    cache = ds.dataset(str(out / "cache" / "samples")).to_table(columns=["key", "embedding"])
    embedded = {
        k
        for k, e in zip(cache["key"].to_pylist(), cache["embedding"].to_pylist(), strict=True)
        if e
    }
    assert {r["key"] for r in decodable} <= embedded
    rec = json.loads((out / "run.json").read_text())
    assert [s["name"] for s in rec["stages"]] == [
        "decode", "captions", "embed", "embed_text", "aesthetic", "nsfw", "caption",
    ]  # fmt: skip
    filters = ("aesthetic", "nsfw", "caption_mismatch")
    survivors_of_filters = [r for r in decodable if r["reason"] not in filters]
    assert rec["counters"]["semantic_dedup"]["counts"]["in"] == len(survivors_of_filters)


def test_score_only_removes_nothing_but_records_scores(tmp_path, tiny_clip_dir):
    out = tmp_path / "out"
    result = run(
        str(SAMPLE), "-o", str(out), "--clip-model", str(tiny_clip_dir),
        "--aesthetic-weights", str(AESTHETIC_PTH),
        "--nsfw-weights", str(NSFW_PTH),
        "--aesthetic-min", "9.9", "--nsfw-max", "0.0001", "--score-only", "--skip", "dedup",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = rows(out)
    assert {r["reason"].split(":")[0] for r in manifest if r["reason"]} == {"decode_error"}
    assert sum(r["aesthetic_score"] is not None for r in manifest) == 13


def test_errors_in_samples_still_exit_zero(tmp_path, bad_shard):
    result = run(str(bad_shard), "-o", str(tmp_path / "out"), "--skip", "embed")
    assert result.exit_code == 0, result.output
    assert "errors" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing-dir/"], "input not found"),
        (["--skip", "everything"], "Invalid value for '--skip'"),
        (["--nsfw-max", "2"], "Invalid value for '--nsfw-max'"),
        (["--clip-score-min", "1.5"], "Invalid value for '--clip-score-min'"),
        (["--caption-from", "json:"], "[filters] caption_from: bad text source 'json:'"),
    ],
)
def test_unusable_arguments(tmp_path, args, message):
    extra = args if args[0] != "missing-dir/" else []
    inputs = [str(tmp_path / "missing-dir")] if not extra else [str(SAMPLE)]
    result = CliRunner().invoke(main, ["curate", *inputs, "-o", str(tmp_path / "o"), *extra])
    assert result.exit_code == 2
    assert message in result.output


def test_unwritable_output(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = CliRunner().invoke(
        main, ["curate", str(SAMPLE), "-o", str(blocker / "out"), "--skip", "embed"]
    )
    assert result.exit_code == 1
    assert "cannot write to output" in result.output


def test_config_file(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[export]\nsamples_per_shard = 3\n[run]\nskip = ["embed"]\n[filters]\nmin_side = 400\n'
    )
    out = tmp_path / "out"
    result = run(str(SAMPLE), "-o", str(out), "--config", str(cfg))
    assert result.exit_code == 0, result.output
    assert any(r["reason"] == "too_small" for r in rows(out))
    bad = tmp_path / "bad.toml"
    bad.write_text("[export]\nsamples_per_shrad = 3\n")
    result = CliRunner().invoke(main, ["curate", str(SAMPLE), "-o", str(out), "--config", str(bad)])
    assert result.exit_code == 2 and "samples_per_shrad" in result.output


def test_offline_without_model_fails_fast_with_advice(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PIXSIEVE_CACHE", str(tmp_path / "empty-cache"))
    result = CliRunner().invoke(
        main, ["curate", str(SAMPLE), "-o", str(tmp_path / "out"), "--no-progress"]
    )
    assert result.exit_code == 1
    assert "pixsieve models download" in result.output
    assert "--skip embed" in result.output  # the way to run without any model
    assert "Traceback" not in result.output


AESTHETIC = AESTHETIC_PTH
NSFW = NSFW_PTH


@pytest.mark.parametrize("option", ["--clip-model", "--aesthetic-weights"])
def test_missing_model_path_fails_before_writing_anything(tmp_path, offline, tiny_clip_dir, option):
    good = {"--clip-model": str(tiny_clip_dir), "--aesthetic-weights": str(AESTHETIC)}
    missing = str(tmp_path / "no-such-model")
    models = {**good, "--nsfw-weights": str(NSFW), option: missing}
    out = tmp_path / "out"
    args = [str(SAMPLE), "-o", str(out), "--skip", "dedup", "--no-progress"]
    result = CliRunner().invoke(main, ["curate", *args, *[a for kv in models.items() for a in kv]])
    assert result.exit_code == 1, result.output
    assert missing in result.output and option in result.output
    assert "Traceback" not in result.output and result.exception is not None
    assert not out.exists()
    models[option] = good[option]  # the corrected command needs no --overwrite
    result = CliRunner().invoke(main, ["curate", *args, *[a for kv in models.items() for a in kv]])
    assert result.exit_code == 0, result.output
    assert len(rows(out)) == 14


def test_model_errors_are_one_line_without_traceback(tmp_path, offline, tiny_clip_dir):
    out = tmp_path / "out"
    base = [
        str(SAMPLE), "-o", str(out), "--clip-model", str(tiny_clip_dir), "--no-progress",
        "--aesthetic-weights", str(AESTHETIC), "--nsfw-weights", str(NSFW),
    ]  # fmt: skip
    cases = {  # each overrides one good option above (click keeps an option's last value)
        # a checksum pin that does not match: ChecksumError, a ModelUnavailableError subclass
        "sha256": ["--aesthetic-weights", f"{AESTHETIC.as_uri()}#sha256={'0' * 64}"],
        # neither a file, a known name, a URL nor a Hub id: FileNotFoundError inside hub
        "not a file": ["--nsfw-weights", "weights.pth"],
        # a known name of the wrong kind: ValueError inside hub
        "not a nsfw head": ["--nsfw-weights", "laion-aesthetic-v2"],
        # a folder that is not a saved CLIP model
        "no config.json": ["--clip-model", str(tmp_path)],
    }
    for message, extra in cases.items():
        result = CliRunner().invoke(main, ["curate", *base, *extra])
        assert result.exit_code == 1, (message, result.output)
        assert message in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
        assert not out.exists()


def test_skipped_stages_need_no_model(tmp_path, offline):
    out = tmp_path / "out"
    missing = str(tmp_path / "missing.pth")
    result = run(
        str(SAMPLE), "-o", str(out), "--skip", "embed",
        "--clip-model", missing, "--aesthetic-weights", missing, "--nsfw-weights", missing,
    )  # fmt: skip
    assert result.exit_code == 0, result.output


def test_model_error_found_behind_wrappers():
    from pixsieve.cli.curate import model_error
    from pixsieve.models.hub import ChecksumError, ModelUnavailableError

    inner = ChecksumError("bad bytes")
    try:
        try:
            raise inner
        except ChecksumError as e:
            raise RuntimeError("shard task failed") from e
    except RuntimeError as e:
        assert model_error(e) is inner

    class RayTaskErrorLike(Exception):  # Ray keeps the worker's exception as ``.cause``
        def __init__(self, cause: BaseException) -> None:
            super().__init__("task failed")
            self.cause = cause

    wrapped = ModelUnavailableError("no model")
    assert model_error(RayTaskErrorLike(wrapped)) is wrapped
    assert model_error(ValueError("unrelated")) is None


def test_bad_config_value_is_a_usage_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[read]\nbatch_size = "x"\n')
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["curate", str(SAMPLE), "-o", str(out), "--config", str(bad)])
    assert result.exit_code == 2
    assert "[read] batch_size must be an integer" in result.output
    assert "Traceback" not in result.output and not out.exists()


def test_invalid_sidecars_are_errors_unless_kept(tmp_path, bad_shard):
    out = tmp_path / "out"
    result = run(str(bad_shard), "-o", str(out), "--skip", "embed")
    assert result.exit_code == 0, result.output
    row = next(r for r in rows(out) if r["key"] == "013-badjson")
    assert row["status"] == "error" and row["reason"] == "invalid_json"
    assert row["output_shard"] is None
    kept = tmp_path / "kept"
    result = run(str(bad_shard), "-o", str(kept), "--skip", "embed", "--keep-invalid-sidecars")
    assert result.exit_code == 0, result.output
    row = next(r for r in rows(kept) if r["key"] == "013-badjson")
    assert row["status"] == "kept" and row["warnings"].startswith("invalid_json: 013-badjson")
    record = json.loads((kept / "run.json").read_text())
    assert record["config"]["read"]["keep_invalid_sidecars"] is True
