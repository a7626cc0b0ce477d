from django.http import HttpRequest

from diagnostics.models import User


class AuthenticatedHttpRequest(HttpRequest):
    """The request type of views behind @login_required: `user` is a real User."""

    user: User
