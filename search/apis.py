"""JSON API: thin views that validate input, call one selector, serialize the result.

The OpenAPI schema (/api/schema/) comes from these serializers via drf-spectacular.
"""

from django.conf import settings
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_serializer
from rest_framework import exceptions, serializers
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog.images import ImageDecodeError, decode_image
from catalog.models import Category, Product
from catalog.selectors import category_subtree_ids
from embeddings.spaces import NoActiveSpace
from search.models import SearchEvent, SearchLog
from search.pipeline import product_search_by_text
from search.retrieval import SearchFilters
from search.searchlog import (
    SESSION_HELP,
    SESSION_MAX_LENGTH,
    EventRefused,
    search_event_record,
    search_filters_logged,
    search_logged,
    session_is_valid,
)
from search.selectors import (
    SearchPage,
    captions_by_image,
    image_text_match,
    product_search_by_image,
    products_similar,
)
from search.sorting import Sort
from search.suggest import suggestions_for_prefix
from shop_search.api import ErrorSerializer
from shop_search.throttling import AnonRateThrottle


def validated_upload_image(upload):
    """The uploaded file decoded as an RGB image, or a ValidationError that says why not."""
    limit = settings.MAX_UPLOAD_IMAGE_BYTES
    if upload.size > limit:
        raise serializers.ValidationError(
            f"image is {upload.size / 1e6:.1f} MB, over the limit of {limit / 1e6:.1f} MB"
        )
    try:
        return decode_image(
            upload,
            max_pixels=settings.MAX_IMAGE_PIXELS,
            max_aspect_ratio=settings.MAX_IMAGE_ASPECT_RATIO,
        )
    except ImageDecodeError as exc:
        raise serializers.ValidationError(str(exc)) from exc


def non_blank(data) -> dict:
    """Request parameters without the empty ones: an empty form field means "not given"."""
    return {key: value for key, value in data.items() if value != ""}


class UploadedImageField(serializers.FileField):
    def to_internal_value(self, data):
        return validated_upload_image(super().to_internal_value(data))


# --- shared input and output --------------------------------------------------------------


class SearchFiltersSerializer(serializers.Serializer):
    """The filters of every product search; `validated_data["filters"]` is a SearchFilters."""

    category = serializers.CharField(
        required=False, max_length=200, help_text="a category slug; its sub-categories count too"
    )
    brand = serializers.CharField(required=False, max_length=120, help_text="exact brand name")
    min_price = serializers.DecimalField(
        max_digits=12, decimal_places=2, min_value=0, required=False
    )
    max_price = serializers.DecimalField(
        max_digits=12, decimal_places=2, min_value=0, required=False
    )
    in_stock = serializers.BooleanField(
        required=False, allow_null=True, default=None, help_text="true: only products in stock"
    )

    def validate_category(self, slug):
        category = Category.objects.filter(slug=slug).first()
        if category is None:
            raise serializers.ValidationError(f"Unknown category {slug!r}.")
        return category

    def validate(self, data):
        low, high = data.get("min_price"), data.get("max_price")
        if low is not None and high is not None and low > high:
            raise serializers.ValidationError(
                {"max_price": [f"Must be at least min_price ({low})."]}
            )
        category = data.get("category")
        data["filters"] = SearchFilters(
            category_ids=tuple(category_subtree_ids(category=category)) if category else (),
            brand=data.get("brand", ""),
            min_price=low,
            max_price=high,
            in_stock=data.get("in_stock"),
        )
        return data


class SortField(serializers.ChoiceField):
    def __init__(self, **kwargs):
        names = ", ".join(Sort.values)
        super().__init__(
            choices=Sort.choices,
            default=Sort.RELEVANCE,
            error_messages={"invalid_choice": f"Unknown sort “{{input}}”: use one of {names}."},
            help_text="relevance (default), or the relevant results by price or newest first",
            **kwargs,
        )


class SessionField(serializers.CharField):
    """The front end's opaque `session` (the search log's session key); optional."""

    def __init__(self, **kwargs):
        super().__init__(
            required=False,
            max_length=SESSION_MAX_LENGTH,
            help_text=SESSION_HELP,
            error_messages={
                "max_length": "The session is too long: at most {max_length} characters."
            },
            **kwargs,
        )

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        # Too long is the max_length validator's to say (it runs after this).
        if len(value) <= SESSION_MAX_LENGTH and not session_is_valid(value):
            raise serializers.ValidationError(
                "The session must be visible ASCII characters without spaces."
            )
        return value


class PageInputSerializer(SearchFiltersSerializer):
    limit = serializers.IntegerField(
        min_value=1, max_value=settings.SEARCH_MAX_LIMIT, default=settings.SEARCH_DEFAULT_LIMIT
    )
    offset = serializers.IntegerField(min_value=0, max_value=10_000, default=0)
    sort = SortField()
    session = SessionField()


@extend_schema_serializer(component_name="ProductHit")
class ProductHitSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="product.id")
    sku = serializers.CharField(source="product.sku")
    title = serializers.CharField(source="product.title")
    brand = serializers.CharField(source="product.brand")
    price = serializers.DecimalField(source="product.price", max_digits=12, decimal_places=2)
    currency = serializers.CharField(source="product.currency")
    in_stock = serializers.BooleanField(source="product.in_stock")
    image_url = serializers.SerializerMethodField()
    score = serializers.FloatField(help_text="fused rank score; results are ordered by it")
    similarity = serializers.FloatField(
        allow_null=True, help_text="cosine similarity of its best photo to the query"
    )
    matched = serializers.ListField(
        child=serializers.ChoiceField(choices=["sku", "text", "synonym", "image", "pinned"]),
        help_text="why it was found: exact SKU, words of its texts (synonym: only through a "
        "synonym of the query's words), its photos, a merchandising rule pins it",
    )
    related = serializers.BooleanField(
        help_text="true: not a match, one of the related products that fill a thin first page"
    )

    def get_image_url(self, hit) -> str | None:
        images = list(hit.product.images.all())
        if not images:
            return None
        return self.context["request"].build_absolute_uri(images[0].file.url)


class CategoryFacetSerializer(serializers.Serializer):
    slug = serializers.CharField(source="value")
    name = serializers.CharField(source="label")
    count = serializers.IntegerField()
    depth = serializers.IntegerField(help_text="0: top-level category, 1: its child...")


class BrandFacetSerializer(serializers.Serializer):
    brand = serializers.CharField(source="value")
    count = serializers.IntegerField()


class FacetsSerializer(serializers.Serializer):
    categories = CategoryFacetSerializer(many=True)
    brands = BrandFacetSerializer(many=True)
    in_stock = serializers.IntegerField()


class FilterRemovalSerializer(serializers.Serializer):
    param = serializers.ChoiceField(
        choices=["category", "brand", "min_price", "max_price", "in_stock"],
        help_text="the request parameter to drop",
    )
    label = serializers.CharField()


class PopularCategorySerializer(serializers.Serializer):
    slug = serializers.CharField()
    name = serializers.CharField()
    count = serializers.IntegerField(help_text="products in it")


class SuggestionsSerializer(serializers.Serializer):
    remove_filters = FilterRemovalSerializer(many=True, help_text="filters that could be removed")
    categories = PopularCategorySerializer(
        many=True,
        help_text="the categories nearest the query (`nearest`), else the shop's popular ones",
    )
    nearest = serializers.BooleanField(
        help_text="true: `categories` hold the products most like the query (their `count`: "
        "how many of those); false: the popular categories"
    )


SEARCH_ID_HELP = (
    "this search in the search log: name it in POST /api/events/ when the shopper clicks, "
    "adds to cart or buys a product it showed (null when it could not be logged)"
)


class UnderstoodSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(
        choices=["price", "cheap", "brand", "category"],
        help_text="price: a price filter; cheap: lower prices first; brand, category: a filter",
    )
    words = serializers.CharField(help_text="the words of the query it came from")
    label = serializers.CharField(help_text='what the shop shows, e.g. "Under 50"')
    params = serializers.DictField(
        child=serializers.CharField(),
        help_text='the filter as request parameters, e.g. {"max_price": "50"}',
    )


class SearchPageSerializer(serializers.Serializer):
    search_id = serializers.UUIDField(allow_null=True, help_text=SEARCH_ID_HELP)
    count = serializers.IntegerField(
        help_text="relevant products in the ranked, filtered window (related ones not counted)"
    )
    space = serializers.CharField(source="space.name")
    sort = serializers.ChoiceField(choices=Sort.choices)
    results = ProductHitSerializer(many=True)
    facets = FacetsSerializer(help_text="counts over the relevant products")
    synonyms = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        help_text='words of the query that synonyms widened, e.g. {"bag": ["handbag"]}',
    )
    suggestions = SuggestionsSerializer(
        allow_null=True, help_text="when nothing is relevant: what to try instead; else null"
    )
    corrected_query = serializers.CharField(
        allow_null=True,
        help_text="text search: the query with its misspelt words corrected to catalog words, "
        "when the text match also used it (null: no correction)",
    )
    understood = UnderstoodSerializer(
        many=True,
        help_text="text search: what the query was understood to mean (price phrases, brands, "
        "category names), each applied as a filter; `understand=false` turns it off",
    )
    ignored_words = serializers.ListField(
        child=serializers.CharField(),
        help_text="text search: words no match has (no product has every word: unknown "
        "words, then the least selective ones, were left out); stop words are not listed",
    )


class CaptionSerializer(serializers.Serializer):
    product_id = serializers.IntegerField()
    field = serializers.CharField(help_text="title, title_<lang> or description")
    text = serializers.CharField()
    score = serializers.FloatField(help_text="cosine similarity to the image")


class SpaceUnavailable(exceptions.APIException):
    status_code = 503
    default_code = "no_active_space"


class SearchApiView(APIView):
    """An API that reads the active space: without one it answers 503, saying why."""

    def handle_exception(self, exc):
        if isinstance(exc, NoActiveSpace):  # a new install before `migrate`
            exc = SpaceUnavailable(str(exc))
        return super().handle_exception(exc)


class UploadApiView(SearchApiView):
    """An API that takes a photo: multipart or form bodies only.

    Anything else (a JSON body, whose `[]` or `"x"` is no mapping of fields) is a 415 that
    says what to send instead, before any field is read.
    """

    parser_classes = [MultiPartParser, FormParser]

    def handle_exception(self, exc):
        if isinstance(exc, exceptions.UnsupportedMediaType):
            exc = exceptions.UnsupportedMediaType(
                self.request.content_type,
                detail=f"Unsupported media type {self.request.content_type!r}: send the photo "
                "and fields as multipart/form-data.",
            )
        return super().handle_exception(exc)


def search_response(request, page: SearchPage) -> Response:
    return Response(SearchPageSerializer(page, context={"request": request}).data)


def api_search_logged(page: SearchPage, data: dict, *, kind: str, query: str = "") -> SearchPage:
    """A text or photo search of the API, logged with its validated input."""
    return search_logged(
        page,
        kind=kind,
        channel=SearchLog.Channel.API,
        query=query,
        filters=search_filters_logged(data),
        offset=data["offset"],
        session=data.get("session", ""),
    )


# --- endpoints ----------------------------------------------------------------------------


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
        parameters=[InputSerializer],
        responses={200: SearchPageSerializer, 400: ErrorSerializer},
    )
    def get(self, request):
        params = self.InputSerializer(data=non_blank(request.query_params))
        params.is_valid(raise_exception=True)
        data = params.validated_data
        page = product_search_by_text(
            query=data["q"],
            filters=data["filters"],
            limit=data["limit"],
            offset=data["offset"],
            sort=data["sort"],
            correct=data["correct"],
            understand=data["understand"],
            session=data.get("session", ""),
        )
        page = api_search_logged(page, data, kind=SearchLog.Kind.TEXT, query=data["q"])
        return search_response(request, page)


class ProductImageSearchApi(UploadApiView):
    @extend_schema_serializer(component_name="ImageSearchUpload")
    class InputSerializer(PageInputSerializer):
        image = UploadedImageField(help_text="a JPEG, PNG, WebP or GIF photo")

    @extend_schema(
        operation_id="search_products_by_image",
        summary="Search products by photo",
        request={"multipart/form-data": InputSerializer},
        responses={200: SearchPageSerializer, 400: ErrorSerializer},
    )
    def post(self, request):
        params = self.InputSerializer(data=non_blank(request.data))
        params.is_valid(raise_exception=True)
        data = params.validated_data
        page = product_search_by_image(
            image=data["image"],
            filters=data["filters"],
            limit=data["limit"],
            offset=data["offset"],
            sort=data["sort"],
        )
        page = api_search_logged(page, data, kind=SearchLog.Kind.PHOTO)
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
        product = get_object_or_404(Product, pk=product_id)
        page = products_similar(product=product, limit=params.validated_data["limit"])
        page = search_logged(
            page,
            kind=SearchLog.Kind.SIMILAR,
            channel=SearchLog.Channel.API,
            source_product_id=product.pk,
            session=params.validated_data.get("session", ""),
        )
        return Response(self.OutputSerializer(page, context={"request": request}).data)


class ImageTextMatchApi(UploadApiView):
    @extend_schema_serializer(component_name="ImageTextMatchUpload")
    class InputSerializer(serializers.Serializer):
        image = UploadedImageField()
        text = serializers.CharField(
            max_length=1000,
            error_messages={
                "blank": "Enter the text to match.",
                "required": "Enter the text to match.",
            },
        )

    @extend_schema_serializer(component_name="ImageTextMatch")
    class OutputSerializer(serializers.Serializer):
        space = serializers.CharField(source="space.name")
        score = serializers.FloatField(help_text="cosine similarity of the text to the image")
        rank = serializers.IntegerField(
            allow_null=True,
            help_text="1 + the number of catalog captions that fit the image better; null when "
            "all `compared` captions do (see rank_label)",
        )
        rank_label = serializers.SerializerMethodField()
        compared = serializers.IntegerField(help_text="captions nearest the image it was ranked in")
        top_captions = CaptionSerializer(many=True, help_text="the captions that fit it best")

        def get_rank_label(self, match) -> str:
            return str(match.rank) if match.rank is not None else f"> {match.compared}"

    @extend_schema(
        operation_id="match_image_text",
        summary="How well a text describes a photo",
        description="The similarity score, and its rank among the catalog's captions for "
        "this photo: does a product photo fit its description?",
        request={"multipart/form-data": InputSerializer},
        responses={200: OutputSerializer, 400: ErrorSerializer},
    )
    def post(self, request):
        params = self.InputSerializer(data=non_blank(request.data))
        params.is_valid(raise_exception=True)
        match = image_text_match(
            image=params.validated_data["image"], text=params.validated_data["text"]
        )
        return Response(self.OutputSerializer(match).data)


class ImageCaptionsApi(UploadApiView):
    @extend_schema_serializer(component_name="ImageCaptionsUpload")
    class InputSerializer(serializers.Serializer):
        image = UploadedImageField()
        limit = serializers.IntegerField(
            min_value=1, max_value=settings.SEARCH_MAX_LIMIT, default=10
        )

    @extend_schema_serializer(component_name="ImageCaptions")
    class OutputSerializer(serializers.Serializer):
        space = serializers.CharField(source="space.name")
        results = CaptionSerializer(many=True)

    @extend_schema(
        operation_id="captions_for_image",
        summary="The catalog captions that best describe a photo",
        request={"multipart/form-data": InputSerializer},
        responses={200: OutputSerializer, 400: ErrorSerializer},
    )
    def post(self, request):
        params = self.InputSerializer(data=non_blank(request.data))
        params.is_valid(raise_exception=True)
        space, hits = captions_by_image(
            image=params.validated_data["image"], limit=params.validated_data["limit"]
        )
        return Response(self.OutputSerializer({"space": space, "results": hits}).data)


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
        hits = suggestions_for_prefix(prefix=query, limit=params.validated_data["limit"])
        return Response(self.OutputSerializer({"query": query, "suggestions": hits}).data)


class EventRateThrottle(AnonRateThrottle):
    """Shopper events have a rate of their own (API_EVENTS_ANON_RATE): clicks are not
    searches, and a shop's visitors behind one address click a lot."""

    scope = "anon_events"

    def get_rate(self) -> str | None:
        return settings.API_EVENTS_ANON_RATE or None


class SearchEventApi(APIView):
    # Anonymous by design (nothing about the shopper is stored): no session authentication,
    # so a signed-in shopper's beacon needs no CSRF token, and every sender is throttled by IP.
    authentication_classes: list = []
    permission_classes: list = []
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
        "Anonymous, throttled per address. Each (search, type, product) is stored once: "
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
                description="unknown search_id, a product that search did not show, a "
                "position that disagrees with it, an unknown type",
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
