"""The test directory (a real slapd, session-wide) and the settings that point the portal at it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import require_tool

from .provider import Provider, provider_start, provider_stop
from .slapd import BASE, SLAPADD, SLAPD, Directory, directory_start, directory_stop

CLINICIANS = f"cn=portal-clinicians,ou=groups,{BASE}"
ADMINS = f"cn=portal-admins,ou=groups,{BASE}"
PICU = f"cn=ward-picu,ou=groups,{BASE}"
NICU = f"cn=ward-nicu,ou=groups,{BASE}"


def person(uid: str) -> str:
    return f"uid={uid},ou=people,{BASE}"


@pytest.fixture(scope="session")
def ldap_directory(tmp_path_factory) -> Iterator[Directory]:
    require_tool(SLAPD and SLAPADD, "OpenLDAP's slapd and slapadd (Debian package slapd)")
    directory = directory_start(tmp_path_factory.mktemp("slapd"))
    try:
        yield directory
    finally:
        directory_stop(directory)


@pytest.fixture
def ldap_sign_in(settings, ldap_directory: Directory) -> Directory:
    """The portal configured as docs/operations.md says for an OpenLDAP directory, local accounts kept."""
    import ldap
    from django_auth_ldap.config import GroupOfNamesType, LDAPSearch

    settings.SIGN_IN_METHODS = ["local", "ldap"]
    settings.LOCAL_SIGN_IN_BREAK_GLASS_ONLY = False
    settings.AUTHENTICATION_BACKENDS = [
        "axes.backends.AxesStandaloneBackend",
        "diagnostics.integrations.sign_in.ldap.DirectoryBackend",
        "diagnostics.integrations.sign_in.local.LocalAccountBackend",
    ]
    settings.AUTH_LDAP_SERVER_URI = ldap_directory.uri
    settings.AUTH_LDAP_BIND_DN = f"cn=portal,ou=services,{BASE}"
    settings.AUTH_LDAP_BIND_PASSWORD = "portal-pass"  # noqa: S105 - the fixture directory's
    settings.AUTH_LDAP_USER_SEARCH = LDAPSearch(f"ou=people,{BASE}", ldap.SCOPE_SUBTREE, "(uid=%(user)s)")
    settings.AUTH_LDAP_GROUP_SEARCH = LDAPSearch(f"ou=groups,{BASE}", ldap.SCOPE_SUBTREE, "(objectClass=groupOfNames)")
    settings.AUTH_LDAP_GROUP_TYPE = GroupOfNamesType()
    settings.LDAP_ADMIN_GROUPS = [ADMINS]
    settings.LDAP_CLINICIAN_GROUPS = [CLINICIANS]
    settings.LDAP_TEAM_GROUPS = {PICU: "PICU", NICU: "NICU"}
    return ldap_directory


@pytest.fixture(scope="session")
def oidc_provider(tmp_path_factory) -> Iterator[Provider]:
    """The test OpenID Connect provider, for the test client's portal (http://testserver)."""
    provider = provider_start(tmp_path_factory.mktemp("oidc-provider"), ["http://testserver"])
    try:
        yield provider
    finally:
        provider_stop(provider)


@pytest.fixture
def oidc_sign_in(settings, oidc_provider: Provider) -> Provider:
    for name, value in oidc_provider.portal_settings().items():
        setattr(settings, name, value)
    return oidc_provider
