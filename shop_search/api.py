"""API conventions: every error body has one readable `error` message, plus details; a 400's
details are `errors` by field (empty when no field is at fault: a body that cannot be read)."""

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.views import defaults
from rest_framework import exceptions, serializers
from rest_framework.views import exception_handler as drf_exception_handler


def _first_message(detail) -> str:
    if isinstance(detail, dict):
        field, value = next(iter(detail.items()))
        message = _first_message(value)
        return message if field in ("non_field_errors", "detail") else f"{field}: {message}"
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    return str(detail)


def exception_handler(exc, context):
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        errors = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        response.data = {"error": _first_message(exc.detail), "errors": errors}
    elif isinstance(response.data, dict) and "detail" in response.data:
        response.data = {"error": str(response.data["detail"])}
        if response.status_code == 400:  # a body that cannot be parsed: no field at fault
            response.data["errors"] = {}
    return response


def _bad_request_message(exception) -> str:
    if isinstance(exception, TooManyFieldsSent):
        return f"Too many fields: at most {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} are read."
    if isinstance(exception, TooManyFilesSent):
        return f"Too many files: at most {settings.DATA_UPLOAD_MAX_NUMBER_FILES} are read."
    if isinstance(exception, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE / 1e6
        return f"The request's fields are over the limit of {limit:.1f} MB (files aside)."
    if isinstance(exception, MultiPartParserError):
        return f"The multipart body cannot be read: {exception}"
    return "Bad request."


def bad_request(request, exception=None):
    """Django's own 400 (handler400): what it refused before or beside DRF (too many fields
    or files, fields over DATA_UPLOAD_MAX_MEMORY_SIZE, a multipart body it cannot read, a
    bad Host). On the API's paths in the API's shape; elsewhere Django's page."""
    if not request.path.startswith("/api/"):
        return defaults.bad_request(request, exception)
    return JsonResponse({"error": _bad_request_message(exception), "errors": {}}, status=400)


class ErrorSerializer(serializers.Serializer):
    """The body of every error response, as `exception_handler` shapes it."""

    error = serializers.CharField(help_text="one readable message")
    errors = serializers.DictField(
        required=False,
        help_text="messages by field (400 responses only; empty when no field is at fault)",
    )
