"""The JSON API's shared pieces: the filters, sort and session fields every search takes,
the page and product-hit serializers its answers share, upload checks, and the base views
that turn a missing space into a 503 and a wrong upload type into a 415 that says why.

The APIs themselves are thin views that validate input, call one selector and serialize
the result, one module per concern: api_search (text and photo product search, similar
products), api_photos (photo questions: match, captions), api_suggest, api_events. The
OpenAPI schema (/api/schema/) comes from their serializers via drf-spectacular.
"""

from django.conf import settings
from drf_spectacular.utils import extend_schema_serializer
from rest_framework import exceptions, serializers
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.views import APIView

from catalog.images import ImageDecodeError, decode_image
from catalog.models import Category
from catalog.selectors import category_subtree_ids
from embeddings.spaces import NoActiveSpace
from search.retrieval import SearchFilters
from search.searchlog import SESSION_HELP, SESSION_MAX_LENGTH, session_is_valid
from search.sorting import Sort


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
