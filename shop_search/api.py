"""API conventions: every error body has one readable `error` message, plus details."""

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
        response.data = {"error": _first_message(exc.detail), "errors": exc.detail}
    elif isinstance(response.data, dict) and "detail" in response.data:
        response.data = {"error": str(response.data["detail"])}
    return response


class ErrorSerializer(serializers.Serializer):
    """The body of every error response, as `exception_handler` shapes it."""

    error = serializers.CharField(help_text="one readable message")
    errors = serializers.DictField(
        required=False, help_text="messages by field (400 responses only)"
    )
