"""A real OpenID Connect provider for the sign-in tests: django-oauth-toolkit's OIDC support in a Django project
of its own (its settings, its SQLite database, its people and groups from people.json), run as a separate
process on a free port by `python -m tests.integrations.sign_in.oidc_provider` (provider.py starts it).
It stands for the hospital's Entra ID or Keycloak: authorization-code flow with PKCE required, RS256 ID tokens
signed with a key made at start-up, a userinfo endpoint, a groups claim, and RP-initiated sign-out."""
