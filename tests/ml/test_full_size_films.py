"""Full-size uploads against their 224 px copies (issue 12, item 5): the 16 official val films, the only
full-size films of the set, each scored as uploaded and as downscaled to 224 px (the training films'
size) by a standard resampler and saved losslessly, must agree within 0.05 under the bundled model."""

from __future__ import annotations

from pathlib import Path

import pytest

from docs.ml.experiments.full_size_consistency import LIMIT, RESAMPLERS, copy_224, score
from ml.serving.decode import decode_image_bytes
from ml.serving.inference import Predictor

ROOT = Path(__file__).resolve().parents[2]
FILMS = sorted((ROOT / "tests" / "fixtures" / "full_size").glob("*.jpeg"))


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.from_artifact(ROOT / "ml" / "default_model")


@pytest.fixture(scope="module")
def full_size_scores(predictor: Predictor) -> dict[str, float]:
    return {film.name: score(predictor, film.read_bytes()) for film in FILMS}  # the gate refuses none


def test_the_fixture_holds_the_16_full_size_val_films() -> None:
    assert len(FILMS) == 16 and sum(film.name.startswith("NORMAL") for film in FILMS) == 8
    assert all(min(decode_image_bytes(film.read_bytes()).pixels.shape) > 2 * 224 for film in FILMS)


@pytest.mark.slow
@pytest.mark.parametrize("resampler", sorted(RESAMPLERS))
def test_a_full_size_film_scores_within_0_05_of_its_224_px_copy(
    predictor: Predictor, full_size_scores: dict[str, float], resampler: str
) -> None:
    differences = {}
    for film in FILMS:
        copy = copy_224(decode_image_bytes(film.read_bytes()).pixels, RESAMPLERS[resampler], "PNG")
        differences[film.name] = round(abs(score(predictor, copy) - full_size_scores[film.name]), 4)
    assert max(differences.values()) <= LIMIT, differences
