"""The suggestions-as-you-type API, with a throttle rate of its own."""

from django.conf import settings
from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from search.suggest import suggestions_for_prefix
from shop_search.api import ErrorSerializer
from shop_search.db_routers import search_read
from shop_search.throttling import AnonRateThrottle


class SuggestRateThrottle(AnonRateThrottle):
    """Typing sends several requests a second: a rate of its own (API_SUGGEST_ANON_RATE)."""

    scope = "anon_suggest"

    def get_rate(self) -> str | None:
        return settings.API_SUGGEST_ANON_RATE or None


class SuggestApi(APIView):
    throttle_classes = [SuggestRateThrottle]

    class InputSerializer(serializers.Serializer):
        q = serializers.CharField(
            max_length=settings.SEARCH_SUGGEST_MAX_LENGTH,
            help_text="what has been typed so far; every word is matched as a prefix",
            error_messages={
                "blank": "Type the start of a search.",
                "required": "Type the start of a search.",
                "max_length": "The prefix is too long: at most {max_length} characters.",
            },
        )
        limit = serializers.IntegerField(
            min_value=1,
            max_value=settings.SEARCH_SUGGEST_MAX_LIMIT,
            default=settings.SEARCH_SUGGEST_DEFAULT_LIMIT,
        )

    @extend_schema_serializer(component_name="Completions")
    class OutputSerializer(serializers.Serializer):
        @extend_schema_serializer(component_name="Completion")
        class SuggestionSerializer(serializers.Serializer):
            text = serializers.CharField()
            kind = serializers.ChoiceField(choices=["query", "title", "brand", "category"])
            count = serializers.IntegerField(
                help_text="products behind it (titles, brands, categories) or searches (queries)"
            )

        query = serializers.CharField()
        suggestions = SuggestionSerializer(many=True)

    @extend_schema(
        operation_id="suggest",
        summary="Suggestions as you type",
        description="Popular queries, product titles, brands and categories whose words "
        "start with the words typed (Chinese: by characters), the most popular first.",
        parameters=[InputSerializer],
        responses={200: OutputSerializer, 400: ErrorSerializer},
    )
    def get(self, request):
        params = self.InputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        query = params.validated_data["q"]
        hits = search_read(
            suggestions_for_prefix, prefix=query, limit=params.validated_data["limit"]
        )
        return Response(self.OutputSerializer({"query": query, "suggestions": hits}).data)
