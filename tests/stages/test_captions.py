"""Image–caption alignment end to end on a tiny CLIP with both towers, and caption reading."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest
import torch
from fixtures_shards import make_tar, photo_jpegs

from pixsieve.config import CurateConfig, EmbedConfig, FilterConfig, ReadConfig, RunConfig
from pixsieve.curate import build_stages, curate
from pixsieve.io.decode import decode_image
from pixsieve.stages.base import stage_name
from pixsieve.stages.documents import caption_sources, read_caption

LONG = " ".join(["a very long caption"] * 40)  # 160 words: over CLIP's 77 tokens
NO_SKIP = ("aesthetic", "nsfw", "dedup")  # no head weights needed; exact/semantic dedup off


@pytest.mark.parametrize(
    ("members", "spec", "expected"),
    [
        ({"a.txt": b"a cat", "a.json": b'{"caption": "a dog"}'}, "txt", ("a cat", None)),
        ({"a.json": b'{"caption": "a dog"}'}, "txt", ("a dog", None)),  # falls back to .json
        ({"a.txt": b"  \n", "a.json": b'{"caption": "a dog"}'}, "txt", (None, "empty")),
        ({"a.txt": b"\xff\xfe caf\xe9"}, "txt", (None, "not_utf8")),
        ({"a.json": b"{not json"}, "txt", (None, "bad_json")),
        ({"a.json": b'{"url": "x"}'}, "txt", (None, "missing")),
        ({}, "txt", (None, "missing")),
        ({"a.json": b'{"meta": {"alt": "red bus"}}'}, "json:meta.alt", ("red bus", None)),
        ({"a.json": b'{"alt": 3}'}, "json:alt", (None, "not_text")),
        ({"a.json": b'{"alt": null}'}, "json:alt", (None, "missing")),
        ({"a.txt": b"a cat"}, "json:caption", (None, "missing")),  # only the named source
    ],
)
def test_read_caption(members, spec, expected):
    assert read_caption(caption_sources(spec), members) == expected


def test_bad_caption_source_is_a_config_error():
    from pixsieve.config import ConfigError

    with pytest.raises(ConfigError, match="caption_from"):
        CurateConfig().with_overrides({"filters": {"caption_from": "json:"}})


def _captioned_shard(path: Path) -> tuple[Path, dict[str, str]]:
    """Eight photos: five with usable captions (one over 77 tokens) and one of each problem."""
    jpegs = [data for _, data in photo_jpegs()[:8]]
    captions = {
        "000": ("txt", b"a photo of a cat"),
        "001": ("txt", b"a red bus in the street"),
        "002": ("json", json.dumps({"caption": "mountains under snow"}).encode()),
        "003": ("txt", LONG.encode()),
        "004": ("txt", b"a bowl of fruit on a table"),
        "005": (None, b""),  # missing
        "006": ("txt", b"   "),  # empty
        "007": ("txt", b"caf\xe9 au lait"),  # latin-1, not UTF-8
    }
    members: list[tuple[str, bytes]] = []
    for (key, (kind, data)), image in zip(captions.items(), jpegs, strict=True):
        members.append((f"{key}.jpg", image))
        if kind is not None:
            members.append((f"{key}.{kind}", data))
    members += [("008.jpg", jpegs[0][:-1] + b"\x00"), ("008.json", b"{not json")]  # bad JSON
    text = {k: d.decode() for k, (kind, d) in captions.items() if k in {"000", "001", "003", "004"}}
    text["002"] = "mountains under snow"
    return make_tar(path, members), text


@pytest.fixture(scope="module")
def shard(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    return _captioned_shard(tmp_path_factory.mktemp("captions") / "shard-000.tar")


def _config(tiny_clip_dir: Path, **filters: object) -> CurateConfig:
    return CurateConfig(
        # sidecars that do not parse are kept (as warnings) so the caption rules see them
        read=ReadConfig(keep_invalid_sidecars=True),
        embed=EmbedConfig(model=str(tiny_clip_dir), device="cpu", batch_size=3),
        filters=FilterConfig(**filters),  # type: ignore[arg-type]
        run=RunConfig(skip=NO_SKIP),
    )


def _manifest(out: Path) -> dict[str, dict]:
    rows = ds.dataset(str(out / "manifest")).to_table().to_pylist()
    return {r["key"]: r for r in rows}


def _by_hand(tiny_clip_dir: Path, shard: Path, text: dict[str, str]) -> dict[str, float]:
    """Cosine of image and caption embeddings computed here, with transformers directly."""
    import tarfile

    from transformers import CLIPModel

    from pixsieve.models.clip_text import load_tokenizer

    model = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    tokenizer = load_tokenizer(tiny_clip_dir)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    out = {}
    with tarfile.open(shard) as tf:
        for key, caption in text.items():
            data = tf.extractfile(f"{key}.jpg").read()  # type: ignore[union-attr]
            pixels = torch.from_numpy(decode_image(data).pixels.copy()).permute(2, 0, 1)[None]
            x = (pixels.float() / 255 - mean) / std
            ids = tokenizer(caption)["input_ids"]
            ids = ids if len(ids) <= 77 else [*ids[:76], ids[-1]]
            with torch.no_grad():
                image = model.get_image_features(pixel_values=x)
                txt = model.get_text_features(input_ids=torch.tensor([ids]))
            image = getattr(image, "pooler_output", image)
            txt = getattr(txt, "pooler_output", txt)
            out[key] = float(torch.nn.functional.cosine_similarity(image, txt)[0])
    return out


def test_clip_score_is_the_cosine_of_independent_embeddings(tiny_clip_dir, shard, tmp_path):
    path, text = shard
    result = curate([str(path)], str(tmp_path / "out"), _config(tiny_clip_dir, clip_score_min=-1))
    rows = _manifest(tmp_path / "out")
    assert len(rows) == 9
    expected = _by_hand(tiny_clip_dir, path, text)
    for key, score in expected.items():
        assert rows[key]["clip_score"] == pytest.approx(score, abs=1e-4), key
        assert rows[key]["caption"] == text[key] and rows[key]["caption_status"] is None
    assert rows["003"]["caption_truncated"] is True and rows["000"]["caption_truncated"] is False
    problems = {k: rows[k]["caption_status"] for k in ("005", "006", "007")}
    assert problems == {"005": "missing", "006": "empty", "007": "not_utf8"}
    assert rows["008"]["status"] == "error"  # an image that does not decode...
    assert rows["008"]["caption_status"] == "bad_json"  # ...and its bad JSON, both recorded
    for key in ("005", "006", "007", "008"):
        assert rows[key]["clip_score"] is None and rows[key]["caption_truncated"] is None
        assert rows[key]["status"] != "removed"  # no caption is no reason to remove
    assert "text_embedding" not in rows["000"]  # vectors stay in the cache
    cache = ds.dataset(str(tmp_path / "out" / "cache" / "samples")).to_table()
    vectors = cache["text_embedding"].drop_null()
    assert cache.schema.field("text_embedding").type == pa.list_(pa.float32())
    assert len(vectors) and set(pc.list_value_length(vectors).to_pylist()) == {768}
    counts = result.record["counters"]["caption"]["counts"]
    assert counts["in"] == counts["kept"] == 8  # 9 samples, 1 image that does not decode
    assert counts["no_caption_missing"] == 1 and counts["no_caption_empty"] == 1
    assert counts["no_caption_not_utf8"] == 1 and counts["caption_truncated"] == 1
    assert "no_caption_bad_json" not in counts  # its sample never reached the filter (error)
    stages = [s["name"] for s in result.record["stages"]]
    assert stages == ["decode", "captions", "embed", "embed_text", "caption"]


def test_bad_json_caption_is_counted_when_the_image_is_fine(tiny_clip_dir, tmp_path):
    jpeg = photo_jpegs()[0][1]
    path = make_tar(tmp_path / "s.tar", [("a.jpg", jpeg), ("a.json", b"{not json")])
    result = curate([str(path)], str(tmp_path / "out"), _config(tiny_clip_dir))
    row = _manifest(tmp_path / "out")["a"]
    assert row["status"] == "kept" and row["caption_status"] == "bad_json"
    assert row["warnings"].startswith("invalid_json")
    assert result.record["counters"]["caption"]["counts"]["no_caption_bad_json"] == 1


def test_threshold_removes_mismatches_and_score_only_records(tiny_clip_dir, shard, tmp_path):
    path, text = shard
    scores = _by_hand(tiny_clip_dir, path, text)
    cut = float(np.median(list(scores.values())))
    result = curate([str(path)], str(tmp_path / "a"), _config(tiny_clip_dir, clip_score_min=cut))
    rows = _manifest(tmp_path / "a")
    removed = {k for k, r in rows.items() if r["reason"] == "caption_mismatch"}
    assert removed == {k for k, s in scores.items() if s < cut} and len(removed) == 2
    assert result.record["counters"]["caption"]["counts"]["dropped_caption_mismatch"] == 2
    result = curate(
        [str(path)], str(tmp_path / "b"), _config(tiny_clip_dir, clip_score_min=1, score_only=True)
    )
    rows = _manifest(tmp_path / "b")
    assert all(r["status"] == "kept" for k, r in rows.items() if k != "008")
    assert all(rows[k]["clip_score"] is not None for k in text)


def test_require_caption_removes_samples_without_one(tiny_clip_dir, shard, tmp_path):
    path, _ = shard
    curate(
        [str(path)],
        str(tmp_path / "out"),
        _config(tiny_clip_dir, clip_score_min=-1, require_caption=True),
    )
    rows = _manifest(tmp_path / "out")
    gone = [(k, r) for k, r in rows.items() if r["status"] == "removed"]
    removed = {k: f"{r['reason']}: {r['reason_detail']}" for k, r in gone}
    assert removed == {
        "005": "no_caption: missing",
        "006": "no_caption: empty",
        "007": "no_caption: not_utf8",
    }


def test_skip_caption_loads_no_text_tower(tiny_clip_dir, tiny_vision_clip_dir, shard, tmp_path):
    path, _ = shard
    cfg = _config(tiny_vision_clip_dir)  # a vision-only model is fine without captions...
    cfg = cfg.with_overrides({"run": {"skip": (*NO_SKIP, "caption")}})
    assert [stage_name(s) for s in build_stages(cfg)] == ["decode", "embed"]
    curate([str(path)], str(tmp_path / "out"), cfg)
    assert "clip_score" not in _manifest(tmp_path / "out")["000"]
    from pixsieve.models.hub import ModelUnavailableError

    with pytest.raises(ModelUnavailableError, match=r"text tower.*--skip caption"):
        curate([str(path)], str(tmp_path / "out2"), _config(tiny_vision_clip_dir))  # ...not with
    assert not (tmp_path / "out2").exists()


def test_text_embedder_takes_the_image_embedder_settings(offline, tiny_clip_dir):
    import pickle

    from pixsieve.stages.captions import TextEmbedder
    from pixsieve.stages.embed import ClipEmbedder

    cfg = _config(tiny_clip_dir)
    image, text = (s for s in build_stages(cfg) if isinstance(s, ClipEmbedder | TextEmbedder))
    assert text.describe() == image.describe()  # same model, revision, device, precision
    assert text.resources == image.resources and text.is_model
    assert TextEmbedder().describe() == ClipEmbedder().describe()  # both default to the pin
    text.setup()
    shipped = pickle.loads(pickle.dumps(text))  # settings travel, the loaded model does not
    assert shipped._encoder is None and shipped.describe() == text.describe()
