from typing import Any

from oauth2_provider.oauth2_validators import OAuth2Validator


class HospitalValidator(OAuth2Validator):
    """Standard claims plus `groups`, as Entra ID and Keycloak send them (with the profile scope here)."""

    oidc_claim_scope = {**OAuth2Validator.oidc_claim_scope, "groups": "profile", "preferred_username": "profile"}

    def get_additional_claims(self, request: Any) -> dict[str, Any]:
        user = request.user
        return {
            "preferred_username": user.username,
            "given_name": user.first_name,
            "family_name": user.last_name,
            "email": user.email,
            "groups": sorted(user.groups.values_list("name", flat=True)),
        }
