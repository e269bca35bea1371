"""Middleware of the project itself (the rest is Django's and libraries')."""

from importlib import import_module

from django.conf import settings
from django.contrib import auth
from django.http import HttpResponse, JsonResponse


def _signed_in_staff(request) -> bool:
    """Does the request carry the session of an active staff member?

    What SessionMiddleware and AuthenticationMiddleware will decide later, decided now from
    the cookie alone: the session must exist, be unexpired and name a user whose password
    has not changed since (get_user checks the session's hash). Only asked for large
    bodies, so ordinary requests pay nothing.
    """
    session_key = request.COOKIES.get(settings.SESSION_COOKIE_NAME)
    if not session_key:
        return False
    engine = import_module(settings.SESSION_ENGINE)
    request.session = engine.SessionStore(session_key)  # SessionMiddleware sets it again
    user = auth.get_user(request)
    return bool(user.is_authenticated and user.is_active and user.is_staff)


class AnonymousBodyLimitMiddleware:
    """Refuse a large request body (413) from anyone but signed-in staff, unread.

    CsrfViewMiddleware parses a POST's whole multipart body for its token before any view
    can check who is asking: without this, anyone with a well-formed csrftoken cookie could
    stream gigabytes into temporary files of the import page. The limit fits a shopper's
    photo search (ANONYMOUS_MAX_BODY_BYTES); only staff import larger files.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        limit = settings.ANONYMOUS_MAX_BODY_BYTES
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0  # Django reads such a body as empty, so there is nothing to refuse
        if length > limit and not _signed_in_staff(request):
            message = (
                f"The request body is {length / 1e6:.1f} MB, over the limit of "
                f"{limit / 1e6:.1f} MB for requests that are not signed in as staff."
            )
            if request.path.startswith("/api/"):
                return JsonResponse({"error": message}, status=413)
            return HttpResponse(message, status=413, content_type="text/plain; charset=utf-8")
        return self.get_response(request)
