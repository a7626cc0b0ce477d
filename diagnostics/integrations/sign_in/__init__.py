"""Hospital sign-in: local accounts, the hospital's directory over LDAP (Active Directory, OpenLDAP), its
OpenID Connect provider, and two-factor sign-in (TOTP and recovery codes) on top of any of them.

`directory.py` is the one owner of the rule that turns a directory's groups into a role and a care team,
for LDAP and OpenID Connect alike; the backends (`local`, `ldap`, `oidc`) call it at each sign-in.
"""
