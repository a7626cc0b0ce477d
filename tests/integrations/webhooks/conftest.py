"""An API client of the team, as the REST API's tests have it: webhooks are signed with its token's secret."""

from ...api.conftest import admin_user, machine  # noqa: F401  (fixtures)
