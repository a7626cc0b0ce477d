"""Seed the benchmark database: one care team with N studies (default 10,000), all visible to
the benchmark clinician, the bundled model active, and an API token.

Run in the benchmark environment (benchmarks.env.bench_env), after `migrate`:
    python -m benchmarks.seed --studies 10000 --out var/bench/credentials.json

Studies are done (95 %, one image and one primary prediction each) or failed (5 %); none is
left queued, so a worker started later has nothing old to claim. Rows are bulk-inserted: the
services would write an audit event and a file per study, which only slows seeding down.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import secrets
import sys
from pathlib import Path


def seed(*, studies: int, patients: int, film: bytes) -> dict[str, object]:
    from django.conf import settings
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage
    from django.db import connection, transaction

    from diagnostics.models import CareTeam, Image, Patient, Prediction, Study, User
    from diagnostics.services.api_tokens import api_token_issue
    from diagnostics.services.model_registry import model_version_activate, model_version_register

    password = secrets.token_urlsafe(16)
    team = CareTeam.objects.create(name="Benchmark Ward")
    admin = User.objects.create(username="bench-admin", role=User.Role.ADMIN, team=team, is_staff=True)
    clinician = User(username="bench-clinician", role=User.Role.CLINICIAN, team=team)
    clinician.set_password(password)  # Argon2, as in production: logins cost what they cost there
    clinician.save()
    issued = api_token_issue(actor=admin, name="benchmark client", team=team)
    model_version = model_version_activate(
        model_version=model_version_register(artifact_dir=Path(settings.DEFAULT_MODEL_DIR))
    )
    stored_name = default_storage.save("seed/film.jpeg", ContentFile(film))
    film_sha = hashlib.sha256(film).hexdigest()
    with transaction.atomic():
        patient_rows = Patient.objects.bulk_create(
            Patient(
                team=team,
                medical_record_number=f"BENCH-{i:06d}",
                name=f"Bench Patient {i:05d}",
                birth_date=f"20{18 + i % 6}-0{1 + i % 9}-1{i % 9}",
                sex="FMU"[i % 3],
                created_by=clinician,
            )
            for i in range(patients)
        )
        study_rows = Study.objects.bulk_create(
            Study(
                patient=patient_rows[i % patients],
                accession_number=f"ACC-{i:06d}",
                status=Study.Status.FAILED if i % 20 == 7 else Study.Status.DONE,
                failure_reason="Image could not be read (seeded)" if i % 20 == 7 else "",
                attempts=1,
                created_by=clinician,
            )
            for i in range(studies)
        )
        image_rows = Image.objects.bulk_create(
            Image(
                study=study,
                file=stored_name,
                original_filename="film.jpeg",
                sha256=film_sha,
                width=2000,
                height=1700,
                format=Image.Format.JPEG,
                size_bytes=len(film),
                uploaded_by=clinician,
            )
            for study in study_rows
        )
        threshold = float(model_version.threshold)
        rng_state = 12345
        predictions = []
        for image, study in zip(image_rows, study_rows, strict=True):
            if study.status != Study.Status.DONE:
                continue
            rng_state = (1103515245 * rng_state + 12345) % 2**31
            probability = rng_state / 2**31
            label = Prediction.Label.PNEUMONIA if probability >= threshold else Prediction.Label.NORMAL
            # One film per study: its prediction is the study's current AI result, as the worker sets it.
            study.latest_probability, study.latest_label = probability, label
            predictions.append(
                Prediction(
                    image=image,
                    model_version=model_version,
                    probability=probability,
                    threshold=threshold,
                    label=label,
                    latency_ms=5.0,
                    model_sha256=model_version.sha256,
                    preprocessing_version=model_version.preprocessing_version,
                    input_sha256=film_sha,
                )
            )
        Prediction.objects.bulk_create(predictions, batch_size=2000)
        Study.objects.bulk_update(study_rows, ["latest_probability", "latest_label"], batch_size=2000)
        # Spread the studies over the past weeks (auto_now_add stamped them all "now").
        with connection.cursor() as cursor:
            for table in ("diagnostics_study", "diagnostics_image", "diagnostics_patient"):
                cursor.execute(
                    f"UPDATE {table} SET created_at = now() - (%s - id) * interval '3 minutes'",  # noqa: S608
                    [max(studies, patients) + 1],
                )
            cursor.execute("UPDATE diagnostics_study SET status_changed_at = created_at + interval '2 seconds'")
            cursor.execute(
                "UPDATE diagnostics_prediction p SET created_at = i.created_at + interval '1 second' "
                "FROM diagnostics_image i WHERE p.image_id = i.id"
            )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return {
        "username": clinician.username,
        "password": password,
        "api_token": issued.key,
        "team_id": team.pk,
        "patient_ids": [patient.pk for patient in patient_rows[:200]],
        "study_ids": [study.pk for study in study_rows[-2000:]],
        "studies": Study.objects.filter(patient__team=team).count(),
        "predictions": Prediction.objects.filter(model_version=model_version).count(),
        "model_version": model_version.name,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--patients", type=int, default=2_500)
    parser.add_argument("--film", required=True, help="the JPEG every seeded image points to")
    parser.add_argument("--out", required=True, help="write the credentials and ids here (JSON)")
    args = parser.parse_args(argv)
    import django

    django.setup()
    result = seed(studies=args.studies, patients=args.patients, film=Path(args.film).read_bytes())
    out = Path(args.out)
    out.write_text(json.dumps(result))
    out.chmod(0o600)
    secret_or_long = ("password", "api_token", "study_ids", "patient_ids")
    print(json.dumps({key: value for key, value in result.items() if key not in secret_or_long}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
