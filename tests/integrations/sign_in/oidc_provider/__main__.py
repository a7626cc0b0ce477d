"""Run the test provider: python -m tests.integrations.sign_in.oidc_provider --port P --db PATH
--client-id ID --client-secret SECRET --redirect-base http://host:port [--redirect-base ...]."""

from __future__ import annotations

import argparse
import json
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

CALLBACK_PATH = "/login/oidc/callback/"
LOGIN_PATH = "/login/"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--client-secret", required=True)
    parser.add_argument("--redirect-base", action="append", required=True)
    args = parser.parse_args()

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    os.environ.update(
        DJANGO_SETTINGS_MODULE="tests.integrations.sign_in.oidc_provider.settings",
        OIDC_TEST_PROVIDER_SECRET=secrets.token_urlsafe(32),
        OIDC_TEST_PROVIDER_DB=args.db,
        OIDC_TEST_PROVIDER_ISSUER=f"http://127.0.0.1:{args.port}/o",
        OIDC_TEST_PROVIDER_KEY=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
    )
    import django

    django.setup()
    from django.contrib.auth.models import Group, User
    from django.core.management import call_command
    from oauth2_provider.models import Application

    call_command("migrate", verbosity=0)
    people = json.loads((Path(__file__).parent / "people.json").read_text())["people"]
    for person in people:
        user = User.objects.create_user(
            person["username"],
            person["email"],
            person["password"],
            first_name=person["first_name"],
            last_name=person["last_name"],
        )
        user.groups.set([Group.objects.get_or_create(name=name)[0] for name in person["groups"]])
    Application.objects.create(
        name="Chest X-ray AI portal",
        client_id=args.client_id,
        client_secret=args.client_secret,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        algorithm=Application.RS256_ALGORITHM,
        redirect_uris=" ".join(base + CALLBACK_PATH for base in args.redirect_base),
        post_logout_redirect_uris=" ".join(base + LOGIN_PATH for base in args.redirect_base),
        skip_authorization=True,
    )
    # A second registered client: its ID tokens must not open the portal (audience check).
    Application.objects.create(
        name="Another hospital application",
        client_id="another-application",
        client_secret="another-secret",  # noqa: S106 - the test provider's
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        algorithm=Application.RS256_ALGORITHM,
        redirect_uris=" ".join(base + CALLBACK_PATH for base in args.redirect_base),
        skip_authorization=True,
    )
    call_command("runserver", f"127.0.0.1:{args.port}", use_reloader=False, use_threading=True, skip_checks=True)


if __name__ == "__main__":
    main()
