"""The bundled model's heatmaps show the film's content, not its edges (issue 29, item 3).

On the fixture's full-size pneumonia films (tests/fixtures/full_size, 8 films of the official val folder), each
drawn as the portal draws it (the model's class activation map over its extent of the film, ml.serving.heatmap), at most
15 % of the strong evidence may lie in the film's outer 10 % frame, and the hottest point must lie inside it.
The model of 2026-11-28, whose pooling took in the feature map's padded outer cells, put 63 % of the strong
evidence of the flagged external/ pneumonias in that frame and its hottest point there in 98 % of them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ml.serving.artifacts import heatmap_extent
from ml.serving.heatmap import evidence_over_film, evidence_placement, positive_evidence
from ml.serving.inference import Predictor

ROOT = Path(__file__).resolve().parents[2]
PNEUMONIA_FILMS = sorted((ROOT / "tests" / "fixtures" / "full_size").glob("person*.jpeg"))
MAX_FRAME_SHARE = 0.15


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.from_artifact(ROOT / "ml" / "default_model")


def test_the_bundled_models_heatmaps_keep_their_evidence_off_the_films_edge(predictor: Predictor) -> None:
    assert len(PNEUMONIA_FILMS) == 8
    extent = heatmap_extent(predictor.manifest)
    placements = {}
    for film in PNEUMONIA_FILMS:
        decoded = predictor.decode(film.read_bytes())
        result = predictor.predict_with_cam(predictor.tensor(decoded)[None])
        assert result.cams is not None
        height, width = decoded.pixels.shape[:2]
        scale = 256 / max(height, width)  # the portal's heatmap size (services/heatmaps.py)
        values = evidence_over_film(
            positive_evidence(result.cams[0]).map,
            width=round(width * scale),
            height=round(height * scale),
            extent=extent,
        )
        placements[film.name] = evidence_placement(values)
    pooled = sum(p.strong_in_frame for p in placements.values()) / sum(p.strong_total for p in placements.values())
    shares = {name: round(p.frame_share, 3) for name, p in placements.items()}
    assert pooled <= MAX_FRAME_SHARE, shares
    assert all(p.hottest_inside for p in placements.values()), {n: p.hottest_inside for n, p in placements.items()}
    assert np.median(list(shares.values())) <= MAX_FRAME_SHARE
