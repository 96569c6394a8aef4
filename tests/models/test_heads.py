"""The LAION heads reproduce LAION's own outputs on real ViT-L/14 embeddings."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from fixtures_clip import AESTHETIC_PTH, GOLDEN, NSFW_PTH, RATING_EMBEDDINGS
from safetensors.torch import save_file

from pixsieve.models import load_aesthetic, load_nsfw
from pixsieve.models.heads import AestheticHead, NSFWHead, load_state_dict_file


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads((GOLDEN / "heads.json").read_text())


@pytest.fixture(scope="module")
def ratings() -> np.ndarray:
    return np.concatenate([np.load(RATING_EMBEDDINGS / f"rating{i}.npy") for i in range(10)])


def test_aesthetic_matches_golden(golden, ratings):
    ref = golden["aesthetic_sac_logos_ava1_l14_linearMSE"]
    scores = load_aesthetic(AESTHETIC_PTH)(ratings)
    assert scores.dtype == np.float32 and scores.shape == (10,)
    expected = ref["scores_rating0_to_9"]
    np.testing.assert_allclose(scores, expected, atol=ref["tolerance_abs"], rtol=0)
    assert np.all(np.diff(scores) > 0)  # higher human rating → higher predicted score


def test_aesthetic_normalises_its_input(ratings):
    head = load_aesthetic(AESTHETIC_PTH)
    np.testing.assert_allclose(head(ratings * 7.5), head(ratings), atol=1e-5)


def test_nsfw_matches_keras_on_ratings_and_random_vectors(golden, ratings):
    ref = golden["nsfw_clip_autokeras_binary_l14"]
    head = load_nsfw(NSFW_PTH)
    probs = head(ratings)
    assert probs.dtype == np.float32 and probs.shape == (10,)
    np.testing.assert_allclose(
        probs, ref["probabilities_rating0_to_9"], atol=ref["tolerance_abs"], rtol=0
    )
    inputs = np.load(GOLDEN / "nsfw_keras_inputs.npy")
    outputs = np.load(GOLDEN / "nsfw_keras_outputs.npy")[:, 0]
    np.testing.assert_allclose(head(inputs), outputs, atol=ref["tolerance_abs"], rtol=0)


def test_safetensors_and_pth_give_the_same_scores(tmp_path, ratings):
    for pth, loader in ((AESTHETIC_PTH, load_aesthetic), (NSFW_PTH, load_nsfw)):
        st = tmp_path / f"{pth.stem}.safetensors"
        save_file(load_state_dict_file(pth), str(st))
        np.testing.assert_array_equal(loader(st)(ratings), loader(pth)(ratings))


def test_module_keys_are_the_published_ones():
    aesthetic = torch.load(AESTHETIC_PTH, weights_only=True, map_location="cpu")
    nsfw = torch.load(NSFW_PTH, weights_only=True, map_location="cpu")
    assert set(AestheticHead().state_dict()) == set(aesthetic)
    assert set(NSFWHead().state_dict()) == set(nsfw)


class _Payload:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_code_is_refused(tmp_path, capsys):
    bad = tmp_path / "evil.pth"
    with open(bad, "wb") as f:
        pickle.dump({"layers.0.weight": _Payload()}, f, protocol=2)
    with pytest.raises(ValueError, match="not a plain tensor state dict"):
        load_aesthetic(bad)
    assert "pwned" not in capsys.readouterr().out


def test_wrong_head_is_a_clear_error():
    with pytest.raises(ValueError, match="not a aesthetic head"):
        load_aesthetic(NSFW_PTH)


def test_input_shape_is_checked_and_empty_is_fine():
    head = load_nsfw(NSFW_PTH)
    assert head(np.zeros((0, 768))).shape == (0,)
    with pytest.raises(ValueError, match=r"\(N, 768\)"):
        head(np.zeros((3, 512)))
