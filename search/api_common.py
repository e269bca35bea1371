"""The JSON API's shared pieces: the filters, sort and session fields every search takes,
the page and product-hit serializers its answers share, upload checks, and the base views
that turn a missing space into a 503 and a wrong upload type into a 415 that says why.

The APIs themselves are thin views that validate input, call one selector and serialize
the result, one module per concern: api_search (text and photo product search, similar
products), api_photos (photo questions: match, captions), api_suggest, api_events. The
OpenAPI schema (/api/schema/) comes from their serializers via drf-spectacular.
"""

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema_serializer
from rest_framework import exceptions, serializers
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.views import APIView

from catalog.images import ImageDecodeError, decode_image
from catalog.models import Category
from catalog.selectors import category_subtree_ids, facet_value_keys
from embeddings.spaces import NoActiveSpace
from search.filters import AttributeFilter, SearchFilters
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


ATTRIBUTE_PREFIX = "attr."
MAX_ATTRIBUTE_FILTERS = 20
MAX_ATTRIBUTE_VALUES = 50


def non_blank(data) -> dict:
    """Request parameters without the empty ones: an empty form field means "not given".
    The repeatable `attr.<name>` keep all their values, as a list."""
    given = {key: value for key, value in data.items() if value != ""}
    for key in given:
        if key.startswith(ATTRIBUTE_PREFIX) and hasattr(data, "getlist"):
            given[key] = [value for value in data.getlist(key) if value != ""]
    return given


ATTRIBUTE_PARAMETER = OpenApiParameter(
    name="attr.<name>",
    type=str,
    many=True,
    description="an option or attribute value, e.g. `attr.size=M` (repeatable: values of one "
    "name are OR-ed; names and values compared without regard to case, aliases included). "
    "Price, stock and option filters hold together on one variant of a product.",
)


def attribute_filters(data) -> tuple[AttributeFilter, ...]:
    """`attr.<name>=<value>` parameters (repeatable; values of one name OR-ed; names and
    values compared without regard to case, aliases included), or a ValidationError."""
    asked: dict[str, list[str]] = {}
    for key, value in data.items():
        if not key.startswith(ATTRIBUTE_PREFIX):
            continue
        name = key[len(ATTRIBUTE_PREFIX) :].strip()
        values = [value] if isinstance(value, str) else list(value)
        if not name or len(name) > 100:
            raise serializers.ValidationError(
                {key[:120]: ["Name an option or attribute (at most 100 characters)."]}
            )
        if any(not isinstance(v, str) or not v.strip() or len(v) > 100 for v in values):
            raise serializers.ValidationError(
                {key[:120]: ["Each value must be text of 1 to 100 characters."]}
            )
        asked.setdefault(name.lower(), []).extend(v.strip() for v in values)
    if len(asked) > MAX_ATTRIBUTE_FILTERS:
        raise serializers.ValidationError(
            f"At most {MAX_ATTRIBUTE_FILTERS} attr.<name> filters in one search."
        )
    if sum(len(values) for values in asked.values()) > MAX_ATTRIBUTE_VALUES:
        raise serializers.ValidationError(f"At most {MAX_ATTRIBUTE_VALUES} attr. values in all.")
    return tuple(
        AttributeFilter(
            name=name,
            keys=facet_value_keys(name, values),
            values=tuple(dict.fromkeys(values)),
        )
        for name, values in sorted(asked.items())
    )


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
        attributes = attribute_filters(self.initial_data)
        data["attributes"] = {a.name: list(a.values) for a in attributes}
        data["filters"] = SearchFilters(
            attributes=attributes,
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


class VariantSerializer(serializers.Serializer):
    sku = serializers.CharField()
    options = serializers.DictField(child=serializers.CharField(), help_text='{"Size": "M"}')
    price = serializers.DecimalField(max_digits=12, decimal_places=2)
    compare_at_price = serializers.DecimalField(max_digits=12, decimal_places=2, allow_null=True)
    in_stock = serializers.BooleanField()
    image_url = serializers.SerializerMethodField(help_text="its own photo, if it has one")

    def get_image_url(self, variant) -> str | None:
        if variant.image is None:
            return None
        return self.context["request"].build_absolute_uri(variant.image.file.url)


@extend_schema_serializer(component_name="ProductHit")
class ProductHitSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="product.id")
    sku = serializers.CharField(source="product.sku")
    title = serializers.CharField(source="product.title")
    brand = serializers.CharField(source="product.brand")
    price = serializers.DecimalField(source="product.price", max_digits=12, decimal_places=2)
    currency = serializers.CharField(source="product.currency")
    in_stock = serializers.BooleanField(source="product.in_stock")
    image_url = serializers.SerializerMethodField(
        help_text="the photo it is shown with: its variant's, else its first"
    )
    variant = VariantSerializer(
        allow_null=True,
        help_text="the variant that best fits the query and filters (null: no variants)",
    )
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
        image = hit.image
        return self.context["request"].build_absolute_uri(image.file.url) if image else None


class CategoryFacetSerializer(serializers.Serializer):
    slug = serializers.CharField(source="value")
    name = serializers.CharField(source="label")
    count = serializers.IntegerField()
    depth = serializers.IntegerField(help_text="0: top-level category, 1: its child...")


class BrandFacetSerializer(serializers.Serializer):
    brand = serializers.CharField(source="value")
    count = serializers.IntegerField()


class AttributeValueSerializer(serializers.Serializer):
    value = serializers.CharField(help_text="what attr.<name>= takes")
    count = serializers.IntegerField(help_text="products")


class AttributeFacetSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="the attr.<name> parameter (lower case)")
    label = serializers.CharField()
    values = AttributeValueSerializer(many=True)


class FacetsSerializer(serializers.Serializer):
    categories = CategoryFacetSerializer(many=True)
    brands = BrandFacetSerializer(many=True)
    in_stock = serializers.IntegerField()
    attributes = AttributeFacetSerializer(
        many=True, help_text="options (Size, Colour) and the attributes configured as facets"
    )


class FilterRemovalSerializer(serializers.Serializer):
    param = serializers.CharField(
        help_text="the request parameter to drop: category, brand, min_price, max_price, "
        "in_stock, or attr.<name>"
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
        choices=["price", "cheap", "brand", "category", "attribute"],
        help_text="price: a price filter; cheap: lower prices first; brand, category: a "
        "filter; attribute: an option or attribute value (products without that option or "
        "attribute stay)",
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
