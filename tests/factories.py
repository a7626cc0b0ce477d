"""factory_boy factories for the clinical domain."""

from __future__ import annotations

import datetime

import factory

from diagnostics.models import CareTeam, Patient, User


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
