"""``curate --against``: new samples deduplicated against what earlier curate runs kept.

Planted embeddings (:class:`ThumbnailEmbedder`: re-encodes and resizes of a photo stay within
~0.99 cosine, different photos do not), keep policy ``first``, threshold 0.97. Run A holds
four photos, a byte copy and a resize; run B holds byte copies and near-copies of A's kept
and removed samples and copies among its own; run C goes against B (and through it, A).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest
from executors.helpers import ThumbnailEmbedder
from fixtures_shards import PHOTOS, encode, make_tar, sample_members
from PIL import Image

from pixsieve import Pipeline
from pixsieve.dedup import SemanticDedupConfig
from pixsieve.errors import InputError
from pixsieve.refilter import refilter


def _photos() -> dict[str, Image.Image]:
    return {p.stem: Image.open(p).convert("RGB") for p in sorted(PHOTOS.iterdir())}


def _half(im: Image.Image) -> Image.Image:
    return im.resize((im.width // 2, im.height // 2))


@pytest.fixture(scope="module")
def batches(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Shards A, B and C (see the module docs)."""
    root = tmp_path_factory.mktemp("against")
    ph = _photos()
    jpg = {name: encode(im, quality=92) for name, im in ph.items()}
    rocket_small = encode(_half(ph["rocket"]), quality=92)
    a = [
        *sample_members("chelsea", jpg["chelsea"]),
        *sample_members("coffee", jpg["coffee"]),
        *sample_members("rocket", jpg["rocket"]),
        *sample_members("astronaut", jpg["astronaut"]),
        *sample_members("chelsea-copy", jpg["chelsea"]),  # exact duplicate within A
        *sample_members("rocket-small", rocket_small),  # semantic duplicate within A
    ]
    b = [
        *sample_members("coffee-copy", jpg["coffee"]),  # byte copy of A's kept coffee
        *sample_members("chelsea-q60", encode(ph["chelsea"], quality=60)),  # near A's kept
        *sample_members("rocket-small-copy", rocket_small),  # byte copy of A's removed item
        *sample_members("china", jpg["china"]),
        *sample_members("china-q60", encode(ph["china"], quality=60)),  # near-copy within B
        *sample_members("flower", jpg["flower"]),
        *sample_members("flower-copy", jpg["flower"]),  # byte copy within B
        *sample_members("hubble", jpg["hubble_deep_field"]),
    ]
    c = [
        *sample_members("astronaut-copy", jpg["astronaut"]),  # A's kept, through B
        *sample_members("hubble-small", encode(_half(ph["hubble_deep_field"]), quality=92)),
        *sample_members("china-copy", jpg["china"]),  # B's kept
        *sample_members("retina", jpg["retina"]),  # new
    ]
    return {
        name: str(make_tar(root / f"{name}.tar", members))
        for name, members in (("A", a), ("B", b), ("C", c))
    }


def _pipeline(against: tuple[str, ...] = (), embedder: Any = None) -> Pipeline:
    config = SemanticDedupConfig(threshold=0.97, keep="first")
    return Pipeline([embedder or ThumbnailEmbedder()], semantic_dedup=config, against=against)


def _rows(out: Path) -> dict[str, dict[str, Any]]:
    return {r["key"]: r for r in ds.dataset(str(out / "manifest")).to_table().to_pylist()}


def _kept(out: Path) -> set[str]:
    return {k for k, r in _rows(out).items() if r["status"] == "kept"}


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def run_a(batches: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "A"
    _pipeline().run([batches["A"]], str(out), workers=2, report=False)
    return out


@pytest.fixture(scope="module")
def run_b(batches: dict[str, str], run_a: Path) -> tuple[Path, dict[str, str], Any]:
    before = _digest(run_a)
    out = run_a.parent / "B"
    result = _pipeline((str(run_a),)).run([batches["B"]], str(out), workers=2, report=False)
    return out, before, result


def test_a_writes_an_index(run_a: Path) -> None:
    assert _kept(run_a) == {"chelsea", "coffee", "rocket", "astronaut"}
    index = run_a / "index"
    assert (index / "curate.json").exists() and (index / "index.json").exists()
    assert list((index / "hashes").rglob("*.parquet")) and list((index / "kept").rglob("*.parquet"))


def test_new_copies_of_earlier_kept_samples_are_removed(
    run_a: Path, batches: dict[str, str], run_b: tuple[Path, dict[str, str], Any]
) -> None:
    out, before, result = run_b
    rows = _rows(out)
    assert len(rows) == 8  # one manifest row per input sample
    earlier = str(run_a.resolve())
    a_source = _rows(run_a)["coffee"]["source"]
    copy = rows["coffee-copy"]  # exact: dropped in the scan pass, never decoded
    assert copy["reason"] == "duplicate_of_earlier" and copy["format"] is None
    assert (copy["duplicate_of"], copy["duplicate_of_source"]) == ("coffee", a_source)
    assert copy["duplicate_of_run"] == earlier
    for key, original in (("chelsea-q60", "chelsea"), ("rocket-small-copy", "rocket")):
        row = rows[key]  # semantic, against A's kept samples (also a copy of A's removed one)
        assert row["reason"] == "duplicate_of_earlier", (key, row)
        assert (row["duplicate_of"], row["duplicate_of_source"]) == (original, a_source)
        assert row["duplicate_of_run"] == earlier and row["similarity"] >= 0.97
    assert rows["china-q60"]["reason"] == "semantic_duplicate"
    assert rows["china-q60"]["duplicate_of"] == "china"
    assert rows["china-q60"]["duplicate_of_run"] is None
    assert rows["flower-copy"]["reason"] == "exact_duplicate"
    assert _kept(out) == {"china", "flower", "hubble"}
    counters = result.record["counters"]
    assert counters["exact_dedup"]["counts"]["dropped_duplicate_of_earlier"] == 1
    assert counters["semantic_dedup"]["counts"]["dropped_duplicate_of_earlier"] == 2
    assert result.record["reasons"]["duplicate_of_earlier"] == 3
    assert _digest(run_a) == before  # the earlier output is only read


def test_same_survivors_as_one_run_over_both(
    batches: dict[str, str], run_a: Path, run_b: tuple[Path, dict[str, str], Any], tmp_path: Path
) -> None:
    both = tmp_path / "AB"
    _pipeline().run([batches["A"], batches["B"]], str(both), workers=2, report=False)
    assert _kept(both) == _kept(run_a) | _kept(run_b[0])


def test_a_chain_of_three_runs(
    batches: dict[str, str], run_a: Path, run_b: tuple[Path, dict[str, str], Any], tmp_path: Path
) -> None:
    out_b = run_b[0]
    before = {**_digest(run_a), **{f"B/{k}": v for k, v in _digest(out_b).items()}}
    out = tmp_path / "C"
    _pipeline((str(out_b),)).run([batches["C"]], str(out), report=False)
    rows = _rows(out)
    a_copy = rows["astronaut-copy"]  # A comes in through B's index
    assert a_copy["reason"] == "duplicate_of_earlier" and a_copy["duplicate_of"] == "astronaut"
    assert a_copy["duplicate_of_run"] == str(run_a.resolve())
    for key, original in (("hubble-small", "hubble"), ("china-copy", "china")):
        assert rows[key]["reason"] == "duplicate_of_earlier", rows[key]
        assert rows[key]["duplicate_of"] == original
        assert rows[key]["duplicate_of_run"] == str(out_b.resolve())
    assert _kept(out) == {"retina"}
    after = {**_digest(run_a), **{f"B/{k}": v for k, v in _digest(out_b).items()}}
    assert after == before
    # one run over A, B and C, in that order, keeps the same samples
    one = tmp_path / "ABC"
    _pipeline().run(list(batches.values()), str(one), workers=2, report=False)
    assert _kept(one) == _kept(run_a) | _kept(out_b) | _kept(out)


class OtherEmbedder(ThumbnailEmbedder):
    """The same embeddings from another "model": refused against A."""


def test_mismatches_are_one_line_errors_before_anything_is_written(
    batches: dict[str, str], run_a: Path, tmp_path: Path
) -> None:
    out = tmp_path / "X"
    with pytest.raises(InputError, match=r"embeddings of model .*OtherEmbedder"):
        _pipeline((str(run_a),), OtherEmbedder()).run([batches["B"]], str(out), report=False)
    low = Pipeline(
        [ThumbnailEmbedder()],
        semantic_dedup=SemanticDedupConfig(threshold=0.9, keep="first"),
        against=(str(run_a),),
    )
    with pytest.raises(InputError, match=r"threshold 0\.9 is below"):
        low.run([batches["B"]], str(out), report=False)
    with pytest.raises(InputError, match="no such directory"):
        _pipeline((str(tmp_path / "nowhere"),)).run([batches["B"]], str(out), report=False)
    (tmp_path / "plain").mkdir()
    with pytest.raises(InputError, match="not a finished curate output"):
        _pipeline((str(tmp_path / "plain"),)).run([batches["B"]], str(out), report=False)
    with pytest.raises(InputError, match="is the output"):
        _pipeline((str(run_a),)).run([batches["B"]], str(run_a), report=False)
    assert not out.exists()


def test_rerun_resumes_and_refilter_keeps_the_earlier_decisions(
    batches: dict[str, str], run_a: Path, run_b: tuple[Path, dict[str, str], Any], tmp_path: Path
) -> None:
    out = run_b[0]
    want = _rows(out)
    # an interrupted run: its last passes and the index are gone; the same command resumes
    for gone in ("cache/done/semantic", "cache/done/export", "index"):
        path = out / gone
        if path.is_dir():
            import shutil

            shutil.rmtree(path)
    again = _pipeline((str(run_a),)).run([batches["B"]], str(out), report=False)
    assert again.record["tasks"]["score"]["resumed"] == 1
    assert _rows(out) == want
    assert (out / "index" / "curate.json").exists()
    new = tmp_path / "refiltered"
    refilter(str(out), str(new), dedup_threshold=0.98, report=False)
    rows = _rows(new)
    for key in ("coffee-copy", "chelsea-q60", "rocket-small-copy"):
        assert rows[key]["reason"] == "duplicate_of_earlier", rows[key]
    assert (new / "index" / "curate.json").exists()


def _blob(rng: Any, size: int = 96) -> Image.Image:
    """A random smooth grey-ish image (its thumbnail is far from every other blob's)."""
    import numpy as np

    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((size, size), Image.BICUBIC)


def _blend(rng: Any, im: Image.Image) -> Image.Image:
    """``im`` blended with a fresh blob: a variant whose similarity straddles the threshold."""
    return Image.blend(im, _blob(rng, im.width), float(rng.uniform(0.1, 0.3)))


@pytest.mark.parametrize("seed", [0, 1])
def test_random_planted_batches_keep_what_one_run_keeps(seed: int, tmp_path: Path) -> None:
    """Copies, re-encodes and blended variants (some near the threshold, so groups chain) of
    random images, spread over A and B: A, then B --against A, keeps what A+B keeps."""
    import numpy as np

    rng = np.random.default_rng(seed)
    originals = [_blob(rng) for _ in range(40)]
    samples: list[tuple[str, bytes]] = []
    for i, im in enumerate(originals):
        samples.append((f"o{i}", encode(im, quality=95)))
        for v in range(int(rng.integers(0, 4))):
            kind = rng.integers(0, 3)
            if kind == 0:
                data = samples[-1][1]  # a byte copy of some earlier sample of this image
            elif kind == 1:
                data = encode(im.resize((64, 64)), quality=int(rng.integers(40, 90)))
            else:
                data = encode(_blend(rng, im), quality=90)
            samples.append((f"o{i}-v{v}", data))
    order = rng.permutation(len(samples))
    cut = len(order) // 2
    members = [
        [m for j in part for m in sample_members(*samples[j])] for part in np.split(order, [cut])
    ]
    a, b = (str(make_tar(tmp_path / f"{n}.tar", m)) for n, m in zip("AB", members, strict=True))
    config = SemanticDedupConfig(threshold=0.97, keep="first")

    def run(inputs: list[str], out: str, against: tuple[str, ...] = ()) -> set[str]:
        Pipeline([ThumbnailEmbedder()], semantic_dedup=config, against=against).run(
            inputs, out, workers=2
        )
        return _kept(Path(out))

    kept_a = run([a], str(tmp_path / "A"))
    kept_b = run([b], str(tmp_path / "B"), (str(tmp_path / "A"),))
    both = run([a, b], str(tmp_path / "AB"))
    assert kept_a | kept_b == both
    rows = _rows(tmp_path / "B")
    reasons = {r["reason"] for r in rows.values()}
    assert {"duplicate_of_earlier", "semantic_duplicate"} <= reasons, reasons
    assert len(rows) == len(order) - cut
    sims = [r["similarity"] for r in rows.values() if r["similarity"] is not None]
    assert min(sims) < 0.98  # some pairs lie near the threshold
    assert (tmp_path / "B" / "report.html").exists()
