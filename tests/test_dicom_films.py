"""Real DICOM films (tests/fixtures/dicom): display orientation, JPEG 2000, metadata never trusted for access."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from diagnostics.models import Prediction, Study
from diagnostics.services.images import image_validate_upload
from diagnostics.services.inference import study_run_inference
from diagnostics.services.studies import study_create
from ml.serving.decode import decode_image_bytes

FILMS = Path(__file__).parent / "fixtures" / "dicom"
UNCOMPRESSED = FILMS / "RG1_UNCR_downsampled4x.dcm"
JPEG2000 = FILMS / "RG1_J2KI.dcm"


def spine_and_lungs(pixels: np.ndarray) -> tuple[float, float]:
    """Mean brightness of the central strip (spine, mediastinum) and of both lung fields."""
    h, w = pixels.shape
    rows = slice(h // 3, 2 * h // 3)
    spine = pixels[rows, int(w * 0.45) : int(w * 0.55)].mean()
    lungs = np.r_[pixels[rows, int(w * 0.2) : int(w * 0.3)].ravel(), pixels[rows, int(w * 0.7) : int(w * 0.8)].ravel()]
    return float(spine), float(lungs.mean())


@pytest.mark.parametrize("film", [UNCOMPRESSED, JPEG2000], ids=["uncompressed", "jpeg2000"])
def test_monochrome1_films_are_shown_with_bright_bone_and_dark_lungs(film):
    decoded = decode_image_bytes(film.read_bytes())
    spine, lungs = spine_and_lungs(decoded.pixels)
    assert spine > lungs + 40, "MONOCHROME1 must be inverted so the film reads like a normal radiograph"
    assert decoded.metadata["Modality"] == "CR" and decoded.metadata["ViewPosition"] == "PA"
    assert decoded.pixels.dtype == np.uint8 and decoded.pixels.min() == 0 and decoded.pixels.max() == 255


def test_the_jpeg2000_film_decodes_to_the_same_picture_as_the_uncompressed_one():
    small = decode_image_bytes(UNCOMPRESSED.read_bytes())
    full = decode_image_bytes(JPEG2000.read_bytes())
    assert (full.width, full.height) == (1841, 1955) and (small.width, small.height) == (460, 488)
    resized = np.asarray(PILImage.fromarray(full.pixels).resize((small.width, small.height), PILImage.BILINEAR))
    correlation = np.corrcoef(resized.ravel().astype(float), small.pixels.ravel().astype(float))[0, 1]
    assert correlation > 0.95


@pytest.mark.django_db
def test_a_dicom_upload_is_predicted_and_its_patient_id_decides_nothing(owner, patient, active_model):
    upload = image_validate_upload(filename="film.dcm", data=UNCOMPRESSED.read_bytes())
    assert upload.metadata["PatientID"] != patient.medical_record_number
    study = study_create(user=owner, patient=patient, uploads=[upload])
    study_run_inference(study_id=study.pk)
    study.refresh_from_db()
    image = study.images.get()
    assert study.status == Study.Status.DONE and study.patient == patient
    assert image.format == "DICOM" and image.dicom_metadata["PatientID"] == "9RG1"
    assert 0.0 <= Prediction.objects.get(image=image).probability <= 1.0


@pytest.mark.parametrize("resample", [PILImage.Resampling.LANCZOS, PILImage.Resampling.BILINEAR])
def test_a_full_size_film_and_its_224_px_copy_score_within_0_05(default_model_dir, resample):
    """The served model reads a 1841x1955 film as it reads the same film downscaled by a standard
    resampler to the 224 px the training films had (issue: full-size uploads)."""
    import io

    from ml.serving.inference import Predictor

    predictor = Predictor.from_artifact(default_model_dir)
    full = predictor.predict_bytes(JPEG2000.read_bytes())
    buffer = io.BytesIO()
    small = PILImage.fromarray(decode_image_bytes(JPEG2000.read_bytes()).pixels).resize((224, 224), resample)
    small.save(buffer, format="PNG")
    downscaled = predictor.predict_bytes(buffer.getvalue())
    assert isinstance(full, float) and isinstance(downscaled, float)
    assert abs(full - downscaled) <= 0.05
