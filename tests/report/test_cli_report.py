"""The report, sweep, refilter and export-docs commands: help, happy paths, user errors."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pyarrow.csv as pcsv
import pytest
from click.testing import CliRunner

from pixsieve.cli import main
from pixsieve.cli.report import COMMANDS, export_docs, refilter, report, sweep


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_names_and_help(runner: CliRunner) -> None:
    names = ["report", "sweep", "refilter", "export-docs", "export-embeddings"]
    assert [c.name for c in COMMANDS] == names
    for command in COMMANDS:  # main registers exactly these
        assert main.commands[command.name] is command
        assert command.help and len(command.help) > 40
        result = runner.invoke(main, [command.name, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"{command.name} {param.name} has no help"


def test_report_command(runner: CliRunner, scored_run: Path) -> None:
    result = runner.invoke(report, [str(scored_run), "--no-blur", "--per-reason", "2"])
    assert result.exit_code == 0, result.output
    path = Path(result.output.strip())
    assert path == scored_run / "report.html"
    assert "NSFW thumbnails are NOT blurred" in path.read_text(encoding="utf-8")
    assert runner.invoke(report, [str(scored_run)]).exit_code == 0


def test_sweep_command(runner: CliRunner, scored_run: Path, tmp_path: Path) -> None:
    csv = tmp_path / "sweep.csv"
    args = [str(scored_run), "--aesthetic-min", "2,3,off", "--nsfw-max", "0.5"]
    result = runner.invoke(sweep, [*args, "--dedup-threshold", "0.99,off", "--csv", str(csv)])
    assert result.exit_code == 0, result.output
    assert "kept" in result.output and " *" in result.output  # the run's own row is marked
    table = pcsv.read_csv(csv)
    assert table.num_rows == 6
    assert sorted(set(table["dedup_threshold"].to_pylist()), key=str) == [0.99, None]
    result = runner.invoke(sweep, [str(scored_run)])
    assert result.exit_code == 0 and (scored_run / "sweep.csv").exists()


def test_refilter_and_export_docs_commands(
    runner: CliRunner, scored_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out2"
    args = [str(scored_run), "-o", str(out), "--aesthetic-min", "4", "--dedup-threshold", "off"]
    result = runner.invoke(refilter, [*args, "--no-report", "--workers", "2"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "run.json").read_text())
    assert record["refiltered_from"]["thresholds"]["aesthetic_min"] == 4.0
    assert record["semantic_dedup"] is None and "semantic_duplicate" not in record["reasons"]
    assert f"{record['totals']['kept']:,} kept" in result.output
    assert not (out / "report.html").exists()
    docs = tmp_path / "docs"
    result = runner.invoke(export_docs, [str(out), "-o", str(docs), "--format", "jsonl"])
    assert result.exit_code == 0, result.output
    lines = [
        json.loads(x) for p in sorted(docs.glob("*.jsonl")) for x in p.read_text().splitlines()
    ]
    assert len(lines) == record["totals"]["kept"]
    assert f"{len(lines):,} documents in" in result.output
    assert all(line["text"] is not None for line in lines)  # 013-badjson is an error now
    assert "documents have no text" not in result.output


def test_export_docs_warns_and_counts_missing_texts(
    runner: CliRunner, scored_run: Path, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    args = [str(scored_run), "-o", str(docs), "--format", "jsonl", "--text-from", "json:caption"]
    result = runner.invoke(export_docs, args)
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for p in sorted(docs.glob("*.jsonl")) for x in p.read_text().splitlines()]
    assert rows and all(r["text"] is None for r in rows)  # the fixtures' JSON has no caption
    n = len(rows)
    assert f"warning: {n:,} of {n:,} documents have no text from 'json:caption'" in result.output


@pytest.mark.parametrize(
    ("command", "extra", "message"),
    [
        (report, [], "not a finished pixsieve run"),
        (sweep, ["--aesthetic-min", "4"], "not a finished pixsieve run"),
        (refilter, ["-o", "OUT2"], "not a finished pixsieve run"),
        (export_docs, ["-o", "DOCS"], "not a finished pixsieve run"),
    ],
)
def test_not_a_run_directory(
    runner: CliRunner, tmp_path: Path, command: click.Command, extra: list[str], message: str
) -> None:
    extra = [str(tmp_path / e) if e.isupper() else e for e in extra]
    result = runner.invoke(command, [str(tmp_path), *extra])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)


def test_user_errors(runner: CliRunner, scored_run: Path, plain_run: Path, tmp_path: Path) -> None:
    cases = [
        (sweep, [str(scored_run), "--aesthetic-min", "high"], 2, "is not a number or 'off'"),
        (sweep, [str(scored_run), "--nsfw-max", "0.5,"], 2, "separated by commas"),
        (sweep, [str(plain_run), "--aesthetic-min", "4"], 1, "no aesthetic_score scores"),
        (refilter, [str(scored_run), "-o", str(scored_run)], 1, "must differ"),
        (export_docs, [str(scored_run), "-o", str(tmp_path), "--text-from", "xml:a"], 2,
         "text source"),
        (export_docs, [str(plain_run), "-o", str(tmp_path / "d"), "--include-embedding"], 1,
         "no cached embeddings"),
        (sweep, [str(tmp_path / "missing")], 1, "not a directory"),
    ]  # fmt: skip
    for command, args, code, message in cases:
        result = runner.invoke(command, args)
        assert result.exit_code == code, (args, result.output)
        assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "missing").exists()
