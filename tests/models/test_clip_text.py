"""CLIP's text side: the real tokenizer's ids, and the text tower on a tiny random model."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from pixsieve.models import ModelUnavailableError
from pixsieve.models.captions import MAX_CAPTION_CHARS, clip_chars
from pixsieve.models.clip_text import CONTEXT_LENGTH, load_clip_text, load_tokenizer

# Token ids of OpenAI's reference tokenizer (clip.tokenize), start 49406 and end 49407 included.
KNOWN_IDS = {
    "a photo of a cat": [49406, 320, 1125, 539, 320, 2368, 49407],
    "a diagram": [49406, 320, 22697, 49407],
    "a dog": [49406, 320, 1929, 49407],
    "A Photo of a CAT!": [49406, 320, 1125, 539, 320, 2368, 256, 49407],  # lower-cased, "!"
    "hello\n   world": [49406, 3306, 1002, 49407],  # whitespace collapsed
}


@pytest.fixture(scope="module")
def encoder(tiny_clip_dir):
    return load_clip_text(tiny_clip_dir, device="cpu", batch_size=3)


@pytest.mark.parametrize("text", sorted(KNOWN_IDS))
def test_tokenizer_ids_match_openai(tiny_clip_dir, text):
    tokenizer = load_tokenizer(tiny_clip_dir)
    assert tokenizer(text)["input_ids"] == KNOWN_IDS[text]
    assert len(tokenizer) == 49408


def test_encode_returns_unit_norm_float32_in_input_order(encoder):
    texts = ["a photo of a cat", "a dog", "a diagram of a very long and winding road", "a dog"]
    emb, truncated = encoder.encode(texts)
    assert emb.shape == (4, 768) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(emb[1], emb[3], atol=1e-6)  # same caption, same embedding
    assert not np.allclose(emb[0], emb[1])
    assert truncated.tolist() == [False] * 4
    one_by_one = np.stack([encoder.encode([t], batch_size=1)[0][0] for t in texts])
    np.testing.assert_allclose(emb, one_by_one, atol=1e-5)  # padding never changes a result


def test_matches_the_text_model_run_by_hand(encoder, tiny_clip_dir):
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    ids = torch.tensor([KNOWN_IDS["a photo of a cat"]])
    with torch.no_grad():
        expected = model.get_text_features(input_ids=ids)
    expected = getattr(expected, "pooler_output", expected)
    expected = torch.nn.functional.normalize(expected, dim=-1).numpy()
    np.testing.assert_allclose(encoder.encode(["a photo of a cat"])[0], expected, atol=1e-5)


def test_long_captions_are_cut_to_77_tokens_and_flagged(encoder):
    long = " ".join(["cat"] * 200)
    tokens = encoder.tokenize([long, "a dog"])
    assert tokens.truncated.tolist() == [True, False]
    assert tokens.lengths.tolist() == [CONTEXT_LENGTH, 4]
    assert tokens.input_ids[0, -1].item() == 49407  # the end marker the model pools at
    assert tokens.attention_mask[1].tolist() == [1, 1, 1, 1] + [0] * (CONTEXT_LENGTH - 4)
    emb, truncated = encoder.encode([long])
    just_75 = encoder.encode([" ".join(["cat"] * 75)])[0]
    np.testing.assert_allclose(emb, just_75, atol=1e-5)  # what was cut never counts
    assert truncated.tolist() == [True]


def test_huge_captions_cost_a_bounded_amount(encoder):
    huge = "word " * 1_000_000 + "   " * 1000
    assert len(clip_chars(huge)) == MAX_CAPTION_CHARS
    assert clip_chars("short  caption ") == "short  caption "
    emb, truncated = encoder.encode([huge])
    assert truncated.tolist() == [True] and np.isfinite(emb).all()


def test_bf16_follows_the_image_tower_setting(tiny_clip_dir, encoder):
    bf16 = load_clip_text(tiny_clip_dir, device="cpu", precision="bf16")
    assert bf16.describe()["dtype"] == "bfloat16" and encoder.describe()["dtype"] == "float32"
    a, _ = bf16.encode(["a photo of a cat"])
    b, _ = encoder.encode(["a photo of a cat"])
    assert a.dtype == np.float32 and float(a[0] @ b[0]) > 0.99


def test_empty_input(encoder):
    emb, truncated = encoder.encode([])
    assert emb.shape == (0, 768) and truncated.shape == (0,)


def test_vision_only_model_is_refused_with_a_hint(tiny_vision_clip_dir, tmp_path, tiny_clip_dir):
    with pytest.raises(ModelUnavailableError, match=r"tokenizer.*--skip caption"):
        load_clip_text(tiny_vision_clip_dir, device="cpu")
    folder = tmp_path / "vision-with-tokenizer"
    shutil.copytree(tiny_vision_clip_dir, folder)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(tiny_clip_dir / name, folder / name)
    with pytest.raises(ModelUnavailableError, match=r"no CLIP text tower.*--skip caption"):
        load_clip_text(folder, device="cpu")


def test_a_cached_snapshot_without_tokenizer_files_gets_them(tiny_clip_dir, tmp_path, monkeypatch):
    """A CLIP snapshot cached before the tokenizer was pinned: its two files are fetched into it,
    from the same repository and commit."""
    from pixsieve.models import clip_text

    revision = "32bd64288804d66eefd0ccbe215aa642df71cc41"
    snapshot = tmp_path / "hf" / "models--openai--clip-vit-large-patch14" / "snapshots" / revision
    shutil.copytree(tiny_clip_dir, snapshot, ignore=shutil.ignore_patterns("*.json", "*.txt"))
    shutil.copy(tiny_clip_dir / "config.json", snapshot / "config.json")
    calls = []

    def fake_fetch_hub(source, root=None, local_only=False):
        calls.append((source.repo_id, source.filename, source.revision, root))
        shutil.copy(tiny_clip_dir / source.filename, snapshot / source.filename)
        return snapshot / source.filename

    monkeypatch.setattr(clip_text, "fetch_hub", fake_fetch_hub)
    assert clip_text.resolve_clip_text(snapshot) == snapshot
    repo = "openai/clip-vit-large-patch14"
    assert calls == [(repo, name, revision, tmp_path) for name in ("vocab.json", "merges.txt")]
    calls.clear()
    assert clip_text.resolve_clip_text(snapshot) == snapshot and calls == []  # now complete


@pytest.mark.gpu
def test_cuda_text_tower_follows_the_image_tower_and_matches_cpu(encoder, tiny_clip_dir):
    from pixsieve.models.clip import load_clip

    image = load_clip(tiny_clip_dir)  # device="auto": CUDA, bf16
    text = load_clip_text(tiny_clip_dir)
    assert (text.device, text.dtype) == (image.device, image.dtype)
    assert text.device.type == "cuda" and text.dtype == torch.bfloat16
    captions = ["a photo of a cat", " ".join(["cat"] * 200), "a dog"]
    gpu, cut = text.encode(captions)
    cpu, _ = encoder.encode(captions)
    assert cut.tolist() == [False, True, False]
    assert np.sum(gpu * cpu, axis=1).min() > 0.99
