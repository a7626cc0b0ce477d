"""Sign-in settings: which methods the login page offers (local accounts, the hospital's directory over LDAP,
its OpenID Connect provider), how directory groups become roles and care teams, and two-factor sign-in.

Everything comes from environment variables (docs/operations.md, "Hospital sign-in"). With none set, the
portal signs people in with its own accounts only, as the embedded default always has.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from .env import env_bool, env_int, env_list, env_str

SIGN_IN_CHOICES = ("local", "ldap", "oidc")


def env_json_object(name: str) -> dict[str, str]:
    """A JSON object of strings, e.g. LDAP_TEAM_GROUPS='{"cn=picu,ou=groups,dc=example,dc=org": "PICU"}'."""
    raw = env_str(name).strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ImproperlyConfigured(f"{name} must be a JSON object of group → care team: {error}") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ImproperlyConfigured(f"{name} must be a JSON object whose keys and values are strings.")
    return value


# --- LDAP / Active Directory (django-auth-ldap) ---------------------------------------------------------
LDAP_SERVER_URI = env_str("LDAP_SERVER_URI")
# --- OpenID Connect (mozilla-django-oidc) ---------------------------------------------------------------
OIDC_RP_CLIENT_ID = env_str("OIDC_CLIENT_ID")

# Which methods the login page offers, in its order. Default: local accounts, plus each directory configured.
SIGN_IN_METHODS = env_list(
    "SIGN_IN_METHODS",
    ["local"] + (["ldap"] if LDAP_SERVER_URI else []) + (["oidc"] if OIDC_RP_CLIENT_ID else []),
)
for _method in SIGN_IN_METHODS:
    if _method not in SIGN_IN_CHOICES:
        raise ImproperlyConfigured(f"SIGN_IN_METHODS: {_method!r} is none of {', '.join(SIGN_IN_CHOICES)}.")
if "ldap" in SIGN_IN_METHODS and not LDAP_SERVER_URI:
    raise ImproperlyConfigured("SIGN_IN_METHODS names ldap but LDAP_SERVER_URI is not set.")
if "oidc" in SIGN_IN_METHODS and not OIDC_RP_CLIENT_ID:
    raise ImproperlyConfigured("SIGN_IN_METHODS names oidc but OIDC_CLIENT_ID is not set.")
# Where local sign-in is not offered, local accounts still sign in by password as break-glass accounts,
# but only portal administrators (the directory or the provider being down must not lock everyone out).
LOCAL_SIGN_IN_BREAK_GLASS_ONLY = "local" not in SIGN_IN_METHODS

AUTHENTICATION_BACKENDS = [
    # First, as django-axes requires: refuses a locked-out username and address before any password check.
    "axes.backends.AxesStandaloneBackend",
    *(["diagnostics.integrations.sign_in.ldap.DirectoryBackend"] if "ldap" in SIGN_IN_METHODS else []),
    *(["diagnostics.integrations.sign_in.oidc.ProviderBackend"] if "oidc" in SIGN_IN_METHODS else []),
    "diagnostics.integrations.sign_in.local.LocalAccountBackend",
]

AUTH_LDAP_SERVER_URI = LDAP_SERVER_URI
AUTH_LDAP_BIND_DN = env_str("LDAP_BIND_DN")
AUTH_LDAP_BIND_PASSWORD = env_str("LDAP_BIND_PASSWORD")
AUTH_LDAP_START_TLS = env_bool("LDAP_START_TLS", default=False)
AUTH_LDAP_ALWAYS_UPDATE_USER = True
AUTH_LDAP_CONNECTION_OPTIONS: dict[Any, Any] = {}
LDAP_USER_BASE = env_str("LDAP_USER_BASE")
# Active Directory: (sAMAccountName=%(user)s); OpenLDAP: (uid=%(user)s).
LDAP_USER_FILTER = env_str("LDAP_USER_FILTER", "(sAMAccountName=%(user)s)")
LDAP_GROUP_BASE = env_str("LDAP_GROUP_BASE")
# "active_directory" (nested groups, member attribute) or "group_of_names" (OpenLDAP groupOfNames).
LDAP_GROUP_TYPE = env_str("LDAP_GROUP_TYPE", "active_directory")
# An entry that matches this filter is a disabled account: refused at once, its portal account deactivated.
# Active Directory: the ACCOUNTDISABLE bit (2) of userAccountControl; OpenLDAP ppolicy: (pwdAccountLockedTime=*).
LDAP_DISABLED_FILTER = env_str("LDAP_DISABLED_FILTER", "(userAccountControl:1.2.840.113556.1.4.803:=2)")
AUTH_LDAP_USER_ATTR_MAP = {
    "first_name": env_str("LDAP_ATTR_FIRST_NAME", "givenName"),
    "last_name": env_str("LDAP_ATTR_LAST_NAME", "sn"),
    "email": env_str("LDAP_ATTR_EMAIL", "mail"),
}
LDAP_ADMIN_GROUPS = env_list("LDAP_ADMIN_GROUPS", [])
LDAP_CLINICIAN_GROUPS = env_list("LDAP_CLINICIAN_GROUPS", [])
LDAP_TEAM_GROUPS = env_json_object("LDAP_TEAM_GROUPS")
# Every LDAP_SYNC_SECONDS the maintenance worker asks the directory about each directory account and
# deactivates those it disabled, deleted or took out of the portal's groups (their API tokens stop at once).
LDAP_SYNC_SECONDS = env_int("LDAP_SYNC_SECONDS", 300)

if LDAP_SERVER_URI:
    import ldap
    from django_auth_ldap.config import GroupOfNamesType, LDAPSearch, NestedActiveDirectoryGroupType

    AUTH_LDAP_CONNECTION_OPTIONS = {ldap.OPT_REFERRALS: 0, ldap.OPT_NETWORK_TIMEOUT: 5, ldap.OPT_TIMEOUT: 10}
    AUTH_LDAP_USER_SEARCH = LDAPSearch(LDAP_USER_BASE, ldap.SCOPE_SUBTREE, LDAP_USER_FILTER)
    AUTH_LDAP_GROUP_SEARCH = LDAPSearch(LDAP_GROUP_BASE or LDAP_USER_BASE, ldap.SCOPE_SUBTREE, "(objectClass=*)")
    if LDAP_GROUP_TYPE == "active_directory":
        AUTH_LDAP_GROUP_TYPE = NestedActiveDirectoryGroupType()
    elif LDAP_GROUP_TYPE == "group_of_names":
        AUTH_LDAP_GROUP_TYPE = GroupOfNamesType()
    else:
        raise ImproperlyConfigured("LDAP_GROUP_TYPE must be active_directory or group_of_names.")

# --- OpenID Connect ---------------------------------------------------------------------------------------
OIDC_PROVIDER_NAME = env_str("OIDC_PROVIDER_NAME", "the hospital sign-in")
OIDC_ISSUER = env_str("OIDC_ISSUER")
OIDC_RP_CLIENT_SECRET = env_str("OIDC_CLIENT_SECRET")
OIDC_OP_AUTHORIZATION_ENDPOINT = env_str("OIDC_AUTHORIZATION_ENDPOINT")
OIDC_OP_TOKEN_ENDPOINT = env_str("OIDC_TOKEN_ENDPOINT")
OIDC_OP_USER_ENDPOINT = env_str("OIDC_USERINFO_ENDPOINT")
OIDC_OP_JWKS_ENDPOINT = env_str("OIDC_JWKS_ENDPOINT")
# RP-initiated sign-out: signing out of the portal also ends the provider's session.
OIDC_OP_END_SESSION_ENDPOINT = env_str("OIDC_END_SESSION_ENDPOINT")
OIDC_RP_SIGN_ALGO = env_str("OIDC_SIGN_ALGO", "RS256")
OIDC_RP_SCOPES = env_str("OIDC_SCOPES", "openid email profile")
OIDC_USE_PKCE = True
OIDC_USE_NONCE = True
OIDC_STORE_ID_TOKEN = True  # the id_token_hint of RP-initiated sign-out
OIDC_CREATE_USER = True
OIDC_TIMEOUT = env_int("OIDC_TIMEOUT_SECONDS", 10)
OIDC_AUTHENTICATION_CALLBACK_URL = "oidc_authentication_callback"
OIDC_OP_LOGOUT_URL_METHOD = "diagnostics.integrations.sign_in.oidc.provider_logout_url"
OIDC_USERNAME_CLAIM = env_str("OIDC_USERNAME_CLAIM", "preferred_username")
OIDC_GROUPS_CLAIM = env_str("OIDC_GROUPS_CLAIM", "groups")
OIDC_ADMIN_GROUPS = env_list("OIDC_ADMIN_GROUPS", [])
OIDC_CLINICIAN_GROUPS = env_list("OIDC_CLINICIAN_GROUPS", [])
OIDC_TEAM_GROUPS = env_json_object("OIDC_TEAM_GROUPS")
if "oidc" in SIGN_IN_METHODS:
    _missing = [
        name
        for name, value in (
            ("OIDC_ISSUER", OIDC_ISSUER),
            ("OIDC_CLIENT_SECRET", OIDC_RP_CLIENT_SECRET),
            ("OIDC_AUTHORIZATION_ENDPOINT", OIDC_OP_AUTHORIZATION_ENDPOINT),
            ("OIDC_TOKEN_ENDPOINT", OIDC_OP_TOKEN_ENDPOINT),
            ("OIDC_USERINFO_ENDPOINT", OIDC_OP_USER_ENDPOINT),
            ("OIDC_JWKS_ENDPOINT", OIDC_OP_JWKS_ENDPOINT),
        )
        if not value
    ]
    if _missing:
        raise ImproperlyConfigured(f"OpenID Connect sign-in needs {', '.join(_missing)}.")

# --- Two-factor sign-in (django-otp: TOTP and recovery codes) --------------------------------------------
# Roles that must verify a one-time code at every sign-in: "admin" (portal administrators and Django staff)
# by default; "clinician" adds clinicians. Anyone else may enrol, and once enrolled is always asked.
TWO_FACTOR_REQUIRED_FOR = env_list("TWO_FACTOR_REQUIRED_FOR", ["admin"])
for _role in TWO_FACTOR_REQUIRED_FOR:
    if _role not in ("admin", "clinician"):
        raise ImproperlyConfigured(f"TWO_FACTOR_REQUIRED_FOR: {_role!r} is neither admin nor clinician.")
OTP_TOTP_ISSUER = env_str("TWO_FACTOR_ISSUER", "Chest X-ray AI portal")
TWO_FACTOR_RECOVERY_CODES = 10
