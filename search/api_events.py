"""The shopper events API: a click, add to cart or purchase of a product a search showed,
anonymous and throttled at a rate of its own."""

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_serializer
from rest_framework import exceptions, permissions, serializers
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from search.api_common import SessionField
from search.models import SearchEvent
from search.searchlog import EventRefused, search_event_record
from shop_search.api import ErrorSerializer
from shop_search.origins import own_origin, request_same_origin
from shop_search.throttling import AnonRateThrottle


class EventRateThrottle(AnonRateThrottle):
    """Shopper events have a rate of their own (API_EVENTS_ANON_RATE): clicks are not
    searches, and a shop's visitors behind one address click a lot."""

    scope = "anon_events"

    def get_rate(self) -> str | None:
        return settings.API_EVENTS_ANON_RATE or None


# Bodies a page of any site can post without a preflight (an HTML form, a beacon).
FORM_TYPES = {"application/x-www-form-urlencoded", "multipart/form-data", "text/plain"}


class FromThisSiteOrNotABrowser(permissions.BasePermission):
    """Events from this site's pages, or from clients that are not browsers (JSON, no
    `Origin`): another site's page must not post events in its visitors' names."""

    def has_permission(self, request, view) -> bool:
        same_origin = request_same_origin(request)
        if same_origin is False:
            sender = request.headers.get("Origin") or request.headers.get("Referer") or ""
            raise exceptions.PermissionDenied(
                f"Cross-origin request refused: events come from the pages of "
                f"{own_origin(request)}, not from {sender[:200] or 'another site'}."
            )
        content_type = request.content_type.partition(";")[0].strip().lower()
        if same_origin is None and content_type in FORM_TYPES:
            raise exceptions.PermissionDenied(
                "A form body without this site's Origin is refused (a page of another site "
                "can send one): send JSON."
            )
        return True


class SearchEventApi(APIView):
    # Anonymous by design (nothing about the shopper is stored): no session authentication,
    # so a signed-in shopper's beacon needs no CSRF token, and every sender is throttled by IP.
    authentication_classes: list = []
    permission_classes = [FromThisSiteOrNotABrowser]
    throttle_classes = [EventRateThrottle]
    # JSON, or a form (the shop page's beacon sends one: a type that needs no preflight).
    parser_classes = [JSONParser, FormParser, MultiPartParser]

    @extend_schema_serializer(component_name="SearchEventInput")
    class InputSerializer(serializers.Serializer):
        search_id = serializers.UUIDField(
            help_text="the `search_id` that the search answered",
            error_messages={
                "invalid": "Must be the search_id (a UUID) that a search answered.",
                "required": "Name the search: its search_id.",
            },
        )
        type = serializers.ChoiceField(
            choices=SearchEvent.Type.choices,
            error_messages={
                "invalid_choice": "Unknown event type “{input}”: use one of "
                + ", ".join(SearchEvent.Type.values)
                + "."
            },
        )
        product_id = serializers.IntegerField(min_value=1, help_text="a product that search showed")
        position = serializers.IntegerField(
            min_value=1,
            required=False,
            allow_null=True,
            help_text="where the search showed it (1-based, counting earlier pages); "
            "when given it must agree with the log",
        )
        # The search's own session must send its events: the `session` it was made with,
        # or (the shop page's beacon) the shop's session cookie.
        session = SessionField()

    @extend_schema_serializer(component_name="SearchEvent")
    class OutputSerializer(serializers.Serializer):
        search_id = serializers.UUIDField()
        type = serializers.ChoiceField(choices=SearchEvent.Type.choices)
        product_id = serializers.IntegerField()
        position = serializers.IntegerField(help_text="where the search showed the product")
        created = serializers.DateTimeField(help_text="when it was first recorded")
        duplicate = serializers.BooleanField(
            help_text="true: this event was already recorded (the answer is a 200, not a 201)"
        )

    @extend_schema(
        operation_id="record_search_event",
        summary="Record what a shopper did with a search result",
        description="A click, add to cart or purchase of a product that a search showed. "
        "Anonymous, throttled per address; from this site's pages or from clients that are "
        "not browsers (JSON without an Origin). Only from the search's own session (the "
        "`session` it was made with, or the shop's session cookie), and a cart or purchase "
        "only after a click on that product in that search. Each (search, type, product) is "
        "stored once: "
        "the first time answers 201, the same event again 200 with `duplicate: true`.",
        request={
            "application/json": InputSerializer,
            "application/x-www-form-urlencoded": InputSerializer,
            "multipart/form-data": InputSerializer,
        },
        responses={
            201: OpenApiResponse(OutputSerializer, description="recorded"),
            200: OpenApiResponse(OutputSerializer, description="already recorded: stored once"),
            400: OpenApiResponse(
                ErrorSerializer,
                description="unknown search_id, another session than the search's, a "
                "product that search did not show, a position that disagrees with it, an "
                "unknown type, a cart or purchase without a click",
            ),
            403: OpenApiResponse(
                ErrorSerializer,
                description="from another site's page (its Origin), or a form body "
                "without this site's Origin",
            ),
            429: OpenApiResponse(ErrorSerializer, description="over API_EVENTS_ANON_RATE"),
        },
        auth=[],
    )
    def post(self, request):
        params = self.InputSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        try:
            event, created = search_event_record(
                search_id=data["search_id"],
                type=data["type"],
                product_id=data["product_id"],
                position=data.get("position"),
                session=data.get("session")
                or request.COOKIES.get(settings.SEARCH_SESSION_COOKIE, ""),
            )
        except EventRefused as exc:
            raise serializers.ValidationError({exc.field: [str(exc)]}) from exc
        body = self.OutputSerializer(
            {
                "search_id": event.search_id,
                "type": event.type,
                "product_id": event.product_id,
                "position": event.position,
                "created": event.created,
                "duplicate": not created,
            }
        ).data
        return Response(body, status=201 if created else 200)
