from django.urls import path
from mozilla_django_oidc.views import OIDCAuthenticationRequestView, OIDCLogoutView

from . import oidc, views

urlpatterns = [
    path("login/", views.LoginView.as_view(), name="login"),
    # Signing out of a provider session also ends it at the provider (oidc.provider_logout_url).
    path("logout/", OIDCLogoutView.as_view(), name="logout"),
    path("login/oidc/", OIDCAuthenticationRequestView.as_view(), name="oidc_authentication_init"),
    path("login/oidc/callback/", oidc.ProviderCallbackView.as_view(), name="oidc_authentication_callback"),
    path("account/two-factor/", views.two_factor_settings_view, name="two_factor_settings"),
    path("account/two-factor/verify/", views.two_factor_verify_view, name="two_factor_verify"),
    path("account/two-factor/enrol/", views.two_factor_enrol_view, name="two_factor_enrol"),
    path("account/two-factor/recovery-codes/", views.two_factor_recovery_codes_view, name="two_factor_recovery_codes"),
    path("account/two-factor/disable/", views.two_factor_disable_view, name="two_factor_disable"),
]
