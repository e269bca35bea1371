"""Product search APIs: by text, by photo, and the products that look like a given one.

Each search reads through `search_read` (a replica when there is a healthy one), then is
logged on the primary (SearchLog, channel API) and answers its `search_id`.
"""

from django.conf import settings
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.response import Response

from search.api_common import (
    ATTRIBUTE_PARAMETER,
    SEARCH_ID_HELP,
    PageInputSerializer,
    ProductHitSerializer,
    SearchApiView,
    SearchPageSerializer,
    SessionField,
    UploadApiView,
    UploadedImageField,
    non_blank,
)
from search.models import SearchLog
from search.pipeline import product_search_by_text
from search.searchlog import search_filters_logged, search_logged
from search.selectors import (
    SearchPage,
    product_search_by_image,
    products_shown_to,
    products_similar,
)
from shop_search.api import ErrorSerializer
from shop_search.db_routers import search_read
from shop_search.throttling import client_ip


def search_response(request, page: SearchPage) -> Response:
    return Response(SearchPageSerializer(page, context={"request": request}).data)


def api_search_logged(
    request, page: SearchPage, data: dict, *, kind: str, query: str = ""
) -> SearchPage:
    """A text or photo search of the API, logged with its validated input."""
    return search_logged(
        page,
        kind=kind,
        channel=SearchLog.Channel.API,
        query=query,
        filters=search_filters_logged(data),
        offset=data["offset"],
        session=data.get("session", ""),
        client=client_ip(request),
    )


class ProductSearchApi(SearchApiView):
    class InputSerializer(PageInputSerializer):
        q = serializers.CharField(
            max_length=500,
            error_messages={"blank": "Enter a search query.", "required": "Enter a search query."},
        )
        correct = serializers.BooleanField(
            default=True,
            help_text="false: match the words as typed, without typo correction",
        )
        understand = serializers.BooleanField(
            default=True,
            help_text="false: take price phrases, brand and category names as plain words",
        )

    @extend_schema(
        operation_id="search_products",
        summary="Search products by text",
        description="Words (in their word forms, category names and synonyms), SKU and "
        "meaning fused by rank; an exact SKU match alone is a match and comes first; "
        "merchandising rules pin, hide, boost and bury. Price phrases, brand and category "
        "names become filters (`understood`). When no product has every word, the unknown "
        "and then the least selective words are left out (`ignored_words`). Misspelt words "
        "also match as the catalog words they are near (`corrected_query`). Photo-only hits "
        "count only when as similar as the word matches, so nonsense finds nothing and "
        "`count` and the facets count matches; a first page with fewer matches than `limit` "
        "is filled with the next most similar products, marked `related`. `sort` orders "
        "the matches only.",
        parameters=[InputSerializer, ATTRIBUTE_PARAMETER],
        responses={200: SearchPageSerializer, 400: ErrorSerializer},
    )
    def get(self, request):
        params = self.InputSerializer(data=non_blank(request.query_params))
        params.is_valid(raise_exception=True)
        data = params.validated_data
        page = search_read(
            product_search_by_text,
            query=data["q"],
            filters=data["filters"],
            limit=data["limit"],
            offset=data["offset"],
            sort=data["sort"],
            correct=data["correct"],
            understand=data["understand"],
            session=data.get("session", ""),
        )
        page = api_search_logged(request, page, data, kind=SearchLog.Kind.TEXT, query=data["q"])
        return search_response(request, page)


class ProductImageSearchApi(UploadApiView):
    @extend_schema_serializer(component_name="ImageSearchUpload")
    class InputSerializer(PageInputSerializer):
        image = UploadedImageField(help_text="a JPEG, PNG, WebP or GIF photo")

    @extend_schema(
        operation_id="search_products_by_image",
        summary="Search products by photo",
        description="The same filters as the text search, `attr.<name>` form fields included.",
        request={"multipart/form-data": InputSerializer},
        responses={200: SearchPageSerializer, 400: ErrorSerializer},
    )
    def post(self, request):
        params = self.InputSerializer(data=non_blank(request.data))
        params.is_valid(raise_exception=True)
        data = params.validated_data
        page = search_read(
            product_search_by_image,
            image=data["image"],
            filters=data["filters"],
            limit=data["limit"],
            offset=data["offset"],
            sort=data["sort"],
        )
        page = api_search_logged(request, page, data, kind=SearchLog.Kind.PHOTO)
        return search_response(request, page)


class ProductSimilarApi(SearchApiView):
    class InputSerializer(serializers.Serializer):
        limit = serializers.IntegerField(
            min_value=1, max_value=settings.SEARCH_MAX_LIMIT, default=8
        )
        session = SessionField()

    @extend_schema_serializer(component_name="SimilarProducts")
    class OutputSerializer(serializers.Serializer):
        search_id = serializers.UUIDField(allow_null=True, help_text=SEARCH_ID_HELP)
        count = serializers.IntegerField()
        space = serializers.CharField(source="space.name")
        results = ProductHitSerializer(many=True)

    @extend_schema(
        operation_id="similar_products",
        summary="Products that look like this one",
        description="From the stored vectors of the product's photos; nothing is re-encoded.",
        parameters=[InputSerializer],
        responses={200: OutputSerializer, 400: ErrorSerializer, 404: ErrorSerializer},
    )
    def get(self, request, product_id: int):
        params = self.InputSerializer(data=non_blank(request.query_params))
        params.is_valid(raise_exception=True)
        product = get_object_or_404(products_shown_to(user=request.user), pk=product_id)
        page = search_read(products_similar, product=product, limit=params.validated_data["limit"])
        page = search_logged(
            page,
            kind=SearchLog.Kind.SIMILAR,
            channel=SearchLog.Channel.API,
            source_product_id=product.pk,
            session=params.validated_data.get("session", ""),
            client=client_ip(request),
        )
        return Response(self.OutputSerializer(page, context={"request": request}).data)
