"""The documentation's examples run, and every CLI command has help text."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pyarrow.dataset as ds
from click.testing import CliRunner

from pixsieve.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_writing_a_filter_example_runs(tmp_path, monkeypatch):
    text = (ROOT / "docs" / "writing-a-filter.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    code = code.replace('["sample/"]', repr([str(ROOT / "sample")]))
    code = code.replace('"out-saturation/"', repr(str(tmp_path / "out")))
    namespace: dict = {}
    exec(compile(code, "writing-a-filter.md", "exec"), namespace)
    result = namespace["result"]
    rows = ds.dataset(str(tmp_path / "out" / "manifest")).to_table().to_pylist()
    grey = [r for r in rows if r["reason"] == "low_saturation"]
    assert len(grey) >= 2, "the sample holds dull photos (rocket, hubble deep field)"
    assert all(r["saturation"] < 0.25 for r in grey)
    assert all(r["saturation"] >= 0.25 for r in rows if r["status"] == "kept")
    assert all(r["saturation"] is None for r in rows if r["status"] == "error")
    assert result.record["counters"]["saturation"]["counts"]["dropped_low_saturation"] == len(grey)


def test_score_filter_example_runs_and_sweeps(tmp_path, monkeypatch):
    from pixsieve.run.sweep import sweep

    text = (ROOT / "docs" / "writing-a-filter.md").read_text()
    code = re.findall(r"```python\n(.*?)```", text, re.S)[1]
    code = code.replace('["sample/"]', repr([str(ROOT / "sample")]))
    code = code.replace('"out-blue/"', repr(str(tmp_path / "out")))
    module = types.ModuleType("blueness_example")  # importable, as a user's module would be
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(code, "writing-a-filter.md", "exec"), module.__dict__)
    assert module.result.record["counters"]["blueness"]["counts"]["in"] > 0
    rows = sweep(str(tmp_path / "out"), thresholds={"blueness": [0.4, 0.3, "off"]}).rows
    assert [r["blueness_threshold"] for r in rows] == [0.4, 0.3, None]
    assert rows[0]["current"] and rows[2]["removed_too_blue"] == 0
    assert rows[0]["kept"] >= rows[1]["kept"]


def _commands(group, prefix=()):
    for name, cmd in group.commands.items():
        yield (*prefix, name), cmd
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, (*prefix, name))


def test_every_command_has_help():
    runner = CliRunner()
    names = []
    for path, cmd in _commands(main):
        assert cmd.help and len(cmd.help.strip()) > 20, path
        result = runner.invoke(main, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output
        for param in cmd.params:
            if param.param_type_name == "option" and not param.hidden and param.name != "help":
                assert param.help, (path, param.name)
        names.append(" ".join(path))
    assert "curate" in names
