"""factory_boy factories for every model the tests build; studies and readings go through the services."""

from __future__ import annotations

import datetime
import secrets

import factory

from diagnostics.models import (
    ApiToken,
    CareTeam,
    Feedback,
    ModelVersion,
    Patient,
    Prediction,
    Study,
    TrainingRun,
    User,
    WebhookDelivery,
)
from ml.serving.preprocessing import PREPROCESSING_VERSION

from .images import jpeg_bytes


class CareTeamFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = CareTeam

    name = factory.Sequence(lambda n: f"Ward {n}")


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    role = User.Role.CLINICIAN
    team = factory.SubFactory(CareTeamFactory)
    password = factory.PostGenerationMethodCall("set_password", "correct horse battery")

    @factory.post_generation
    def _save(obj, create, extracted, **kwargs):  # noqa: N805
        if create:
            obj.save()


class PatientFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Patient

    team = factory.SubFactory(CareTeamFactory)
    medical_record_number = factory.Sequence(lambda n: f"MRN{n:06d}")
    name = factory.Sequence(lambda n: f"Test Child {n}")
    # Three years old whenever the tests run: inside the model card's intended ages (1-5).
    birth_date = factory.LazyFunction(lambda: datetime.date.today() - datetime.timedelta(days=3 * 365))
    sex = Patient.Sex.FEMALE
    created_by = factory.SubFactory(UserFactory, team=factory.SelfAttribute("..team"))


class AdminFactory(UserFactory):
    """A portal administrator (staff, the Models page and the Django admin), in no care team by default."""

    username = factory.Sequence(lambda n: f"admin{n}")
    role = User.Role.ADMIN
    team = None
    is_staff = True


class StudyFactory(factory.django.DjangoModelFactory):
    """A study created the way every channel creates one (services.studies.study_accept), with real films:
    by default one JPEG from tests/fixtures/films, or ``films=[(name, bytes), ...]``."""

    class Meta:
        model = Study

    patient = factory.SubFactory(PatientFactory)
    created_by = factory.SelfAttribute("patient.created_by")
    accession_number = ""
    modality = Study.Modality.CR
    view_position = ""
    seed = 0  # which real film, with a faint noise of its own (tests/images.py)
    films: list[tuple[str, bytes]] | None = None

    @classmethod
    def _create(cls, model_class, *, patient, created_by, seed, films, **fields):  # noqa: ANN001, ANN206
        from diagnostics.services.studies import study_accept

        return study_accept(
            user=created_by,
            patient=patient,
            files=films or [("chest.jpeg", jpeg_bytes(seed=seed))],
            fields=fields,
        ).study


class ModelVersionFactory(factory.django.DjangoModelFactory):
    """A registry row with no artifact on disk: for pages and permissions, not for inference."""

    class Meta:
        model = ModelVersion

    name = factory.Sequence(lambda n: f"cnn@{n}")
    architecture = "cnn"
    artifact_path = factory.LazyAttribute(lambda o: f"/nonexistent/{o.name}")
    sha256 = "0" * 64
    preprocessing_version = PREPROCESSING_VERSION
    threshold = 0.5
    status = ModelVersion.Status.CANDIDATE


class PredictionFactory(factory.django.DjangoModelFactory):
    """What the inference worker stores, with a chosen probability (the worker itself is tested end to
    end): the label follows the model's threshold and the study's current result is refreshed.
    ``study=`` picks the study's one film; ``finish_study=True`` also marks the study done;
    ``refresh_study=False`` stores the row alone, as the worker does before it refreshes the study."""

    class Meta:
        model = Prediction

    model_version = factory.SubFactory(ModelVersionFactory)
    probability = 0.5
    role = Prediction.Role.PRIMARY
    latency_ms = 5.0

    @classmethod
    def _create(cls, model_class, *, study=None, image=None, finish_study=False, refresh_study=True, **fields):  # noqa: ANN001, ANN206, E501
        from diagnostics.services.studies import study_refresh_latest_result

        image = image if image is not None else study.images.get()
        model_version = fields["model_version"]
        probability = fields["probability"]
        prediction = Prediction.objects.create(
            image=image,
            threshold=model_version.threshold,
            label=Prediction.Label.PNEUMONIA if probability >= model_version.threshold else Prediction.Label.NORMAL,
            model_sha256=model_version.sha256,
            preprocessing_version=model_version.preprocessing_version,
            input_sha256=image.sha256,
            **fields,
        )
        if refresh_study:  # False: leave the study's current result as it was (tests of the refresh itself)
            study_refresh_latest_result(study=image.study)
        if finish_study:
            Study.objects.filter(pk=image.study_id).update(status=Study.Status.DONE)
        return prediction


class TrainingRunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TrainingRun

    architecture = "cnn"
    config = factory.LazyFunction(lambda: {"epochs": 1})


class ApiTokenFactory(factory.django.DjangoModelFactory):
    """A token row for `user` with the given `key` (the API client sends it as a Bearer key). Written
    directly: the service issues tokens only to API-client accounts, tests also act as clinicians."""

    class Meta:
        model = ApiToken

    user = factory.SubFactory(UserFactory)
    team = factory.SelfAttribute("user.team")
    created_by = factory.SelfAttribute("user")
    name = factory.LazyAttribute(lambda o: f"test token of {o.user.username}")
    webhook_secret = factory.LazyFunction(lambda: secrets.token_hex(32))

    class Params:
        key = factory.LazyFunction(lambda: f"pdp_{secrets.token_urlsafe(6)[:8]}{secrets.token_urlsafe(32)}")

    prefix = factory.LazyAttribute(lambda o: o.key[4:12])
    key_sha256 = factory.LazyAttribute(lambda o: _token_hash(o.key))


def _token_hash(key: str) -> str:
    from diagnostics.services.api_tokens import api_token_hash

    return api_token_hash(key)


class WebhookDeliveryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = WebhookDelivery

    study = factory.SubFactory(StudyFactory)
    url = "https://his.example/hook"
    event = "study.finished"
    payload = factory.LazyFunction(lambda: {"status": "done"})


class FeedbackFactory(factory.django.DjangoModelFactory):
    """A clinician's reading, recorded through services.feedback (agreeing unless told otherwise)."""

    class Meta:
        model = Feedback

    @classmethod
    def _create(cls, model_class, *, prediction, clinician, agrees=True, confirmed_label=None, **fields):  # noqa: ANN001, ANN206
        from diagnostics.services.feedback import feedback_record

        return feedback_record(
            user=clinician, prediction=prediction, agrees=agrees, confirmed_label=confirmed_label, **fields
        )
