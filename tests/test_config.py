"""Config files and overrides: every value is type- and range-checked into a ConfigError."""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path

import pytest

from pixsieve.config import ConfigError, CurateConfig

GOOD = {
    "read": {"image_size": 224, "batch_size": 32, "decoder": "pillow"},
    "filters": {"min_side": 64, "max_aspect_ratio": 3, "aesthetic_min": 5, "score_only": True},
    "embed": {"model": "clip-vit-l-14", "device": "cpu", "precision": "fp32", "batch_size": 8},
    "models": {"aesthetic": "laion-aesthetic-v2", "nsfw": None},
    "dedup": {"threshold": 0.9, "keep": "first", "mode": "semdedup", "n_clusters": 4},
    "export": {"samples_per_shard": 10},
    "run": {"workers": 2, "retries": 0, "skip": ["nsfw", "semantic-dedup"]},
}

TOML = """
[read]
image_size = 224
batch_size = 32
decoder = "pillow"

[filters]
min_side = 64
max_aspect_ratio = 3
aesthetic_min = 5
score_only = true

[embed]
model = "clip-vit-l-14"
device = "cpu"
precision = "fp32"
batch_size = 8

[models]
aesthetic = "laion-aesthetic-v2"

[dedup]
threshold = 0.9
keep = "first"
mode = "semdedup"
n_clusters = 4

[export]
samples_per_shard = 10

[run]
workers = 2
retries = 0
skip = ["nsfw", "semantic-dedup"]
"""


def check_good(cfg: CurateConfig) -> None:
    assert cfg.read.batch_size == 32 and cfg.read.decoder == "pillow"
    assert cfg.filters.max_aspect_ratio == 3.0 and isinstance(cfg.filters.max_aspect_ratio, float)
    assert cfg.filters.aesthetic_min == 5.0 and isinstance(cfg.filters.aesthetic_min, float)
    assert cfg.filters.score_only is True
    assert cfg.embed.batch_size == 8 and cfg.embed.precision == "fp32"
    assert cfg.models.aesthetic == "laion-aesthetic-v2" and cfg.models.nsfw is None
    assert cfg.dedup.threshold == 0.9 and cfg.dedup.n_clusters == 4
    assert cfg.run.skip == ("nsfw", "semantic-dedup") and cfg.run.workers == 2
    assert cfg.run.retries == 0 and cfg.export.samples_per_shard == 10


def test_good_toml(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(TOML)
    check_good(CurateConfig.from_file(path))


def test_good_json(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(GOOD))
    check_good(CurateConfig.from_file(path))


def test_good_yaml(tmp_path):
    yaml = pytest.importorskip("yaml")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    check_good(CurateConfig.from_file(path))
    empty = tmp_path / "empty.yml"
    empty.write_text("# nothing set\nrun:\n")
    assert CurateConfig.from_file(empty) == CurateConfig()


@pytest.mark.parametrize(
    ("toml", "words"),
    [
        ('[read]\nbatch_size = "x"\n', ["[read] batch_size", "an integer", "'x'"]),
        ("[read]\nbatch_size = true\n", ["[read] batch_size", "an integer", "True"]),
        ("[read]\nbatch_size = 1.5\n", ["[read] batch_size", "an integer", "1.5"]),
        ('[dedup]\nthreshold = "0.9"\n', ["[dedup] threshold", "a number", "'0.9'"]),
        ("[filters]\nscore_only = 1\n", ["[filters] score_only", "true or false", "1"]),
        ('[run]\nskip = "nsfw"\n', ["[run] skip", "a list of strings", "'nsfw'"]),
        ("[run]\nskip = [1]\n", ["[run] skip", "a list of strings", "[1]"]),
        ("[embed]\nmodel = 3\n", ["[embed] model", "a string", "3"]),
        ("read = 3\n", ["[read]", "table of key = value", "3"]),
        ("[run]\nretries = -1\n", ["[run] retries", "at least 0", "-1"]),
        ("[run]\nworkers = 0\n", ["[run] workers", "at least 1", "0"]),
        ('[run]\nmemory_limit = "lots"\n', ["[run] memory_limit", "not a memory size", "'lots'"]),
        ("[read]\nbatch_size = 0\n", ["[read] batch_size", "at least 1", "0"]),
        ("[embed]\nbatch_size = 0\n", ["[embed] batch_size", "at least 1", "0"]),
        ("[read]\nimage_size = 0\n", ["[read] image_size", "at least 1", "0"]),
        ("[read]\nmax_pixels = -5\n", ["[read] max_pixels", "at least 1", "-5"]),
        ("[dedup]\nthreshold = 1.5\n", ["[dedup] threshold", "(0, 1]", "1.5"]),
        ('[dedup]\nkeep = "best"\n', ["[dedup] keep", "aesthetic", "'best'"]),
        ('[embed]\nprecision = "fp8"\n', ["[embed] precision", "bf16", "'fp8'"]),
        ("[nope]\nx = 1\n", ["unknown config section [nope]", "known:"]),
        ("[run]\nretry = 1\n", ["unknown key(s) ['retry']", "retries"]),
    ],
)
def test_bad_toml_values_name_section_key_and_value(tmp_path, toml, words):
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        CurateConfig.from_file(path)
    message = str(info.value)
    assert str(path) in message
    for word in words:
        assert word in message, message


def test_yaml_top_level_must_be_a_mapping(tmp_path):
    pytest.importorskip("yaml")
    path = tmp_path / "list.yaml"
    path.write_text("- read\n- run\n")
    with pytest.raises(ConfigError, match="top level, got list"):
        CurateConfig.from_file(path)
    section = tmp_path / "section.yaml"
    section.write_text("run:\n  - retries\n")
    with pytest.raises(ConfigError, match=r"\[run\] must be a table .* got list"):
        CurateConfig.from_file(section)


def test_json_top_level_must_be_a_mapping(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="top level"):
        CurateConfig.from_file(path)


def test_json_null_is_allowed_only_for_optional_fields(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"run": {"workers": None}, "dedup": {"n_clusters": None}}))
    assert CurateConfig.from_file(path) == CurateConfig()
    path.write_text(json.dumps({"run": {"retries": None}}))
    with pytest.raises(ConfigError, match=r"\[run\] retries must be an integer, got NoneType"):
        CurateConfig.from_file(path)


def test_overrides_go_through_the_same_checks():
    cfg = CurateConfig().with_overrides({"run": {"retries": 3, "skip": ("nsfw",)}})
    assert cfg.run.retries == 3 and cfg.run.skip == ("nsfw",)
    assert CurateConfig().with_overrides({"dedup": {"threshold": 1}}).dedup.threshold == 1.0
    with pytest.raises(ConfigError, match=r"\[run\] retries must be at least 0, got -1"):
        CurateConfig().with_overrides({"run": {"retries": -1}})
    with pytest.raises(ConfigError, match=r"\[read\] batch_size must be an integer, got str"):
        CurateConfig().with_overrides({"read": {"batch_size": "x"}})
    with pytest.raises(ConfigError, match="cannot skip"):
        CurateConfig().with_overrides({"run": {"skip": ("everything",)}})


def test_the_example_file_sets_every_key_to_its_default():
    root = Path(__file__).resolve().parents[1]
    example = root / "examples" / "curate.toml"
    assert CurateConfig.from_file(example) == CurateConfig()
    documented = (root / "docs" / "config.md").read_text()
    text = example.read_text()
    for section in fields(CurateConfig):
        assert f"## `[{section.name}]`" in documented, section.name
        assert f"[{section.name}" in text, section.name
        for key in fields(type(getattr(CurateConfig(), section.name))):
            assert f"| `{key.name}` |" in documented, (section.name, key.name)
            written = rf"^(#? ?{key.name} = |\[{section.name}\.{key.name}\])"
            assert re.search(written, text, re.M), (section.name, key.name)


def test_storage_options_from_toml_and_their_checks(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(
        '[storage.options]\nendpoint_url = "http://127.0.0.1:9000"\nkey = "AKIA"\n'
        'client_kwargs = { region_name = "eu-west-1", aws_secret_access_key = "s" }\n'
    )
    cfg = CurateConfig.from_file(path)
    assert cfg.storage.options == {
        "endpoint_url": "http://127.0.0.1:9000",
        "key": "AKIA",
        "client_kwargs": {"region_name": "eu-west-1", "aws_secret_access_key": "s"},
    }
    applied = cfg.applied()["storage"]["options"]
    assert applied["key"] == "<redacted>" and applied["endpoint_url"] == "http://127.0.0.1:9000"
    assert applied["client_kwargs"] == {
        "region_name": "eu-west-1", "aws_secret_access_key": "<redacted>",
    }  # fmt: skip
    path.write_text("[storage]\noptions = 3\n")
    with pytest.raises(ConfigError, match=r"\[storage\] options must be a table"):
        CurateConfig.from_file(path)


def test_applied_settings_are_the_ones_that_ran():
    default = CurateConfig().applied()
    assert default["dedup"]["threshold"] == 0.95 and default["dedup"]["semantic"] is True
    assert default["filters"]["aesthetic_min"] == 4.5 and "embed" in default
    no_models = CurateConfig().with_overrides({"run": {"skip": ("embed",)}}).applied()
    assert "embed" not in no_models and "models" not in no_models
    assert "aesthetic_min" not in no_models["filters"] and "nsfw_max" not in no_models["filters"]
    assert no_models["dedup"] == {"exact": True, "semantic": False}
    no_nsfw = CurateConfig().with_overrides({"run": {"skip": ("nsfw", "dedup")}}).applied()
    assert "nsfw_max" not in no_nsfw["filters"] and "aesthetic_min" in no_nsfw["filters"]
    assert no_nsfw["models"] == {"aesthetic": None}
    assert no_nsfw["dedup"] == {"exact": False, "semantic": False}
    assert default["filters"]["clip_score_min"] == 0.2 and "caption_from" in default["filters"]
    captions = ("clip_score_min", "caption_from", "require_caption")
    no_caption = CurateConfig().with_overrides({"run": {"skip": ("caption",)}}).applied()
    assert not set(captions) & set(no_caption["filters"])
    assert "aesthetic_min" in no_caption["filters"]
    assert not set(captions) & set(no_models["filters"])


def test_one_threshold_rule_everywhere():
    from pixsieve.dedup import SemanticDedupConfig

    for bad in (0.0, -0.5, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"cosine similarity in \(0, 1\]"):
            SemanticDedupConfig(threshold=bad)
        with pytest.raises(ConfigError, match=r"\[dedup\] threshold is a cosine similarity"):
            CurateConfig().with_overrides({"dedup": {"threshold": bad}})
