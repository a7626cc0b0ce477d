"""Performance guards: list pages and API lists run a number of queries that does not grow with rows.

Each guard renders a page with a few rows, then with more rows, and requires the same number of
queries. A tiny smoke test of the benchmark code (benchmarks/model_latency.py) runs on a two-layer ONNX model.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from diagnostics.models import Feedback, Image, ModelVersion, Patient, Prediction, Study, User
from diagnostics.services.studies import study_refresh_latest_result

from .conftest import api_client_for, login_client
from .factories import PatientFactory
from .images import jpeg_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def film_name() -> str:
    return default_storage.save("guards/film.jpeg", ContentFile(jpeg_bytes(size=64)))


def add_studies(
    *, user: User, patient: Patient, model: ModelVersion, film_name: str, count: int, images: int = 1, feedback: int = 0
) -> list[Study]:
    """`count` done studies of `patient`, each with `images` images, a primary prediction per image
    and `feedback` readings per prediction (rows written directly: only their number matters here)."""
    studies = []
    for _ in range(count):
        study = Study.objects.create(patient=patient, created_by=user, status=Study.Status.DONE)
        for _ in range(images):
            image = Image.objects.create(
                study=study, file=film_name, sha256="0" * 64, width=64, height=64,
                format=Image.Format.JPEG, size_bytes=100, uploaded_by=user,
            )  # fmt: skip
            prediction = Prediction.objects.create(
                image=image, model_version=model, probability=0.7, threshold=model.threshold,
                label=Prediction.Label.PNEUMONIA, latency_ms=1.0, model_sha256=model.sha256,
                preprocessing_version=model.preprocessing_version, input_sha256="0" * 64,
            )  # fmt: skip
            for _ in range(feedback):
                Feedback.objects.create(prediction=prediction, clinician=user, agrees=True, confirmed_label="PNEUMONIA")
        study_refresh_latest_result(study=study)
        studies.append(study)
    return studies


def queries_for(client, url: str) -> int:
    client.get(url)  # warm per-process caches (content types, sessions) before counting
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200, response.content[:300]
    return len(captured.captured_queries)


@pytest.fixture
def grow(owner, patient, active_model, film_name):
    """Count the queries of a URL with few rows, add rows, count again."""

    def measure(url_for, *, client, first: int = 2, more: int = 6, **shape) -> tuple[int, int]:
        add_studies(user=owner, patient=patient, model=active_model, film_name=film_name, count=first, **shape)
        before = queries_for(client, url_for())
        add_studies(user=owner, patient=patient, model=active_model, film_name=film_name, count=more, **shape)
        other = PatientFactory(team=owner.team, created_by=owner)
        add_studies(user=owner, patient=other, model=active_model, film_name=film_name, count=more, **shape)
        return before, queries_for(client, url_for())

    return measure


@pytest.mark.parametrize("sort", ["triage", "newest", "patient"])
def test_worklist_queries_do_not_grow_with_studies(owner, grow, sort):
    before, after = grow(lambda: reverse("worklist") + f"?sort={sort}", client=login_client(owner))
    assert before == after


def test_patient_page_queries_do_not_grow_with_studies(owner, patient, grow):
    before, after = grow(lambda: reverse("patient_detail", args=[patient.pk]), client=login_client(owner))
    assert before == after


def test_patient_list_queries_do_not_grow_with_patients(owner, grow):
    before, after = grow(lambda: reverse("patient_list"), client=login_client(owner))
    assert before == after


def test_study_page_queries_do_not_grow_with_readings_or_other_studies(owner, patient, active_model, film_name):
    client = login_client(owner)
    [study] = add_studies(user=owner, patient=patient, model=active_model, film_name=film_name, count=1, feedback=1)
    url = reverse("study_detail", args=[study.pk])
    before = queries_for(client, url)
    for prediction in Prediction.objects.filter(image__study=study):
        for _ in range(5):
            Feedback.objects.create(prediction=prediction, clinician=owner, agrees=True, confirmed_label="PNEUMONIA")
    add_studies(user=owner, patient=patient, model=active_model, film_name=film_name, count=10, feedback=2)
    assert queries_for(client, url) == before


def test_study_page_queries_grow_by_at_most_one_per_image(owner, patient, active_model, film_name):
    """Images of one study (at most 20): prediction and readings are prefetched; only the heatmap's
    state is looked up per image (selectors/heatmaps.py reads its audit event), a bounded cost."""
    client = login_client(owner)
    [one] = add_studies(user=owner, patient=patient, model=active_model, film_name=film_name, count=1, feedback=1)
    [five] = add_studies(
        user=owner, patient=patient, model=active_model, film_name=film_name, count=1, images=5, feedback=2
    )
    single = queries_for(client, reverse("study_detail", args=[one.pk]))
    several = queries_for(client, reverse("study_detail", args=[five.pk]))
    assert several - single <= 4


@pytest.mark.parametrize("name", ["api_study_list", "api_patient_list", "api_prediction_list"])
def test_api_lists_queries_do_not_grow_with_rows(owner, grow, name):
    before, after = grow(lambda: reverse(name), client=api_client_for(owner))
    assert before == after


def test_api_study_detail_queries_do_not_grow_with_images(owner, patient, active_model, film_name):
    client = api_client_for(owner)
    [one] = add_studies(user=owner, patient=patient, model=active_model, film_name=film_name, count=1)
    [five] = add_studies(user=owner, patient=patient, model=active_model, film_name=film_name, count=1, images=5)
    assert queries_for(client, reverse("api_study_detail", args=[one.pk])) == queries_for(
        client, reverse("api_study_detail", args=[five.pk])
    )


# The benchmark code itself, on a tiny model (no database needed, < 10 s).


def tiny_onnx(path: Path) -> Path:
    """NHWC image 16x16x3 -> Transpose -> Conv 3->4 (3x3, pad 1) -> GlobalAveragePool -> MatMul 4->1."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    dense = numpy_helper.from_array(rng.standard_normal((4, 1)).astype(np.float32), "d")
    nodes = [
        helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "w"], ["conv"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("GlobalAveragePool", ["conv"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "d"], ["logit"], name="dense"),
        helper.make_node("Sigmoid", ["logit"], ["probability"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 16, 16, 3])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["batch", 1])],
        initializer=[weight, dense],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_bench_counts_flops_and_times_a_tiny_model(tmp_path):
    from benchmarks import model_latency as bench

    path = tiny_onnx(tmp_path / "tiny.onnx")
    flops = bench.count_flops(path)
    # Conv: 16*16 outputs x 4 channels x (3*3*3) MACs; dense: 4 MACs; x2 for FLOPs.
    assert flops["flops_per_image"] == 2 * (16 * 16 * 4 * 27 + 4)
    assert flops["params"] == 4 * 3 * 3 * 3 + 4
    result = bench.measure_onnx(path, 16, threads=1, batches=[1, 4], max_runs=5, budget_s=0.2)
    assert set(result["batches"]) == {"1", "4"}
    assert result["batches"]["4"]["images_per_s"] > 0 and result["peak_rss_mb"] > 0
    ceiling = bench.gemm_ceiling(threads=1, sizes=(64,), budget_s=0.05)
    assert ceiling["best_gflops"] > 0
    profile = bench.layer_profile(path, 16, threads=1, batch=2, runs=3)
    conv = [row for row in profile["nodes"] if row["flops"]]
    assert conv and conv[0]["flops"] > 0


def test_bench_decodes_the_synthetic_film_both_ways():
    from benchmarks import model_latency as bench
    from ml.serving.preprocessing import load_for_model

    film = bench.synthetic_film(400, 340)
    assert hashlib.sha256(film).hexdigest() == hashlib.sha256(bench.synthetic_film(400, 340)).hexdigest()
    naive, served = bench.decode_naive(film, 64), load_for_model(film, input_size=64)
    assert naive.shape == served.shape == (64, 64, 3)
    # Same picture either way: draft decoding only changes how many pixels are read.
    assert float(np.abs(naive - served).mean()) < 8.0
