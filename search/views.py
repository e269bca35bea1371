"""Shop pages: plain Django templates over the same selectors and input rules as the API."""

import base64
import functools
import io
import logging
import secrets

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST
from PIL import Image
from rest_framework import serializers

from catalog.models import Product
from embeddings.selectors import model_warmup
from embeddings.spaces import NoActiveSpace, space_active
from search.api_common import (
    ATTRIBUTE_PREFIX,
    SearchFiltersSerializer,
    SortField,
    UploadedImageField,
    non_blank,
)
from search.api_events import EventRateThrottle
from search.models import SearchEvent, SearchLog
from search.pipeline import product_search_by_text
from search.searchlog import (
    EventRefused,
    search_event_record,
    search_filters_logged,
    search_logged,
    session_is_valid,
)
from search.selectors import (
    image_vector,
    product_hidden_from_shoppers,
    products_nearest,
    products_shown_to,
    products_similar,
)
from search.sorting import Sort
from search.storefront import products_browse, storefront_categories, storefront_products

# The API's one-line error message, so the page and the API say the same thing.
from shop_search.api import _first_message
from shop_search.db_routers import search_read
from shop_search.throttling import anonymous_throttle_wait, client_ip

logger = logging.getLogger(__name__)

PAGE_SIZE = 24
SIMILAR_ON_PAGE = 8
HOME_PRODUCTS = 12
# The photo searched with, shown above its results: a small JPEG beside its vector.
PHOTO_THUMBNAIL_PIXELS = 160
PHOTO_THUMBNAIL_QUALITY = 80


class SearchPageInput(SearchFiltersSerializer):
    q = serializers.CharField(required=False, max_length=500, default="")
    correct = serializers.BooleanField(required=False, default=True)
    understand = serializers.BooleanField(required=False, default=True)
    photo = serializers.CharField(required=False, max_length=64, default="")
    sort = SortField()


class PhotoInput(serializers.Serializer):
    image = UploadedImageField()


def with_shop_session(view):
    """The shop page's own session for the search log: a random id in a cookie (SameSite=Lax,
    HttpOnly, until the browser closes), read as `request.shop_session`, set only when absent
    (or not one of ours)."""

    @functools.wraps(view)
    def wrapped(request, *args, **kwargs):
        name = settings.SEARCH_SESSION_COOKIE
        current = request.COOKIES.get(name, "")
        fresh = not session_is_valid(current)
        request.shop_session = secrets.token_urlsafe(18) if fresh else current
        response = view(request, *args, **kwargs)
        if fresh:
            response.set_cookie(
                name,
                request.shop_session,
                samesite="Lax",
                httponly=True,  # the page's script never reads it: beacons name the search
                secure=settings.SESSION_COOKIE_SECURE,
            )
        return response

    return wrapped


def throttled(view):
    """The API's anonymous throttle on a page: a 429 page that says how long to wait."""

    @functools.wraps(view)
    def throttled_view(request, *args, **kwargs):
        wait = anonymous_throttle_wait(request)
        if wait is None:
            return view(request, *args, **kwargs)
        context = {"error": f"Too many searches from your address: try again in {wait} s."}
        response = render(request, "search/search.html", context, status=429)
        response["Retry-After"] = str(wait)
        return response

    return throttled_view


def needs_active_space(view):
    """Without an active space (a new install before `migrate`) the page says so: a 503."""

    @functools.wraps(view)
    def wrapped(request, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except NoActiveSpace as exc:
            context = {"query": request.GET.get("q", "")[:500], "error": str(exc)}
            return render(request, "search/search.html", context, status=503)

    return wrapped


@throttled
@with_shop_session
@needs_active_space
def shop_search(request):
    params = SearchPageInput(data=non_blank(request.GET))
    if not params.is_valid():
        context = {"query": request.GET.get("q", "")[:500], "error": _first_message(params.errors)}
        return render(request, "search/search.html", context, status=400)
    data = params.validated_data
    context = {"query": data["q"], "photo": data["photo"], "filters": data, "page": None}
    # The fused window holds at most both lists and a SKU match: 2 x SEARCH_MAX_RESULTS + 1.
    page_number = (
        Paginator(range(2 * settings.SEARCH_MAX_RESULTS + 1), PAGE_SIZE)
        .get_page(request.GET.get("page"))
        .number
    )
    offset = (page_number - 1) * PAGE_SIZE
    page = None
    logged = True
    if data["photo"]:
        stored = _photo_stored(data["photo"])
        if stored is None:
            context["error"] = "That photo search has expired: upload the photo again."
        else:
            space, vector, context["photo_thumbnail"] = stored
            page = search_read(
                products_nearest,
                space=space,
                vector=vector,
                filters=data["filters"],
                limit=PAGE_SIZE,
                offset=offset,
                sort=data["sort"],
            )
    elif data["q"]:
        page = search_read(
            product_search_by_text,
            query=data["q"],
            filters=data["filters"],
            limit=PAGE_SIZE,
            offset=offset,
            sort=data["sort"],
            correct=data["correct"],
            understand=data["understand"],
            session=request.shop_session,
        )
    elif data["filters"]:
        # A category (or other filters) with no words typed: browsed, not a search to log.
        logged = False
        context["browsing"] = True
        page = search_read(
            products_browse,
            filters=data["filters"],
            limit=PAGE_SIZE,
            offset=offset,
            sort=data["sort"],
        )
    elif not context.get("error"):
        heading, products = search_read(storefront_products, limit=HOME_PRODUCTS)
        context.update(
            home_categories=search_read(storefront_categories),
            home_heading=heading,
            home_products=products,
        )
    if page is not None and logged:
        page = search_logged(
            page,
            kind=SearchLog.Kind.PHOTO if data["photo"] else SearchLog.Kind.TEXT,
            channel=SearchLog.Channel.PAGE,
            query="" if data["photo"] else data["q"],
            filters=search_filters_logged(data),
            offset=offset,
            session=request.shop_session,
            client=client_ip(request),
        )
    if page is not None:
        matches = [hit for hit in page.results if not hit.related]
        context.update(
            page=page,
            page_number=page_number,
            has_next=offset + PAGE_SIZE < page.count,
            has_previous=page_number > 1,
            filtered=bool(data["filters"]),
            sorts=Sort.choices,
            matches=matches,
            related=[hit for hit in page.results if hit.related],
            understood_chips=understood_chips(request, page),
            attribute_facets=attribute_facet_links(request, page),
            clear_filters_link=_without_filters(request),
            click_prefix=click_url_prefix(page.search_id),
            # Positions as logged: related products follow the matches of the first page.
            first_position=offset + 1,
            related_first_position=offset + len(matches) + 1,
        )
    return render(request, "search/search.html", context)


def understood_chips(request, page) -> list[tuple[str, str]]:
    """(label, link) per thing the search understood: the link searches again without it
    (`understand=false`), keeping the others as the shopper's own filters."""
    chips = []
    for item in page.understood:
        params = request.GET.copy()
        params.pop("page", None)
        params["understand"] = "false"
        for other in page.understood:
            if other is not item:
                for name, value in other.params.items():
                    params.setdefault(name, value)
        chips.append((item.label, f"?{params.urlencode()}"))
    return chips


def attribute_facet_links(request, page) -> list[tuple[str, list[tuple[str, int, str, bool]]]]:
    """(label, [(value, count, link, selected)]) per option or attribute facet: each link
    adds the value to `attr.<name>` (values of one name are OR-ed), or removes it."""
    facets = []
    for facet in page.facets.attributes:
        key = f"attr.{facet.name}"
        chosen = {v.lower() for v in request.GET.getlist(key)}
        links = []
        for item in facet.values:
            params = request.GET.copy()
            params.pop("page", None)
            selected = item.value.lower() in chosen
            values = [v for v in params.getlist(key) if v.lower() != item.value.lower()]
            params.setlist(key, values if selected else [*values, item.value])
            links.append((item.label, item.count, f"?{params.urlencode()}", selected))
        facets.append((facet.label, links))
    return facets


def _without_filters(request) -> str:
    params = request.GET.copy()
    for name in [*FILTER_PARAMS, "page", *(k for k in params if k.startswith(ATTRIBUTE_PREFIX))]:
        params.pop(name, None)
    return f"?{params.urlencode()}"


FILTER_PARAMS = ("category", "brand", "min_price", "max_price", "in_stock")


def _photo_cache_key(photo_id: str) -> str:
    return f"search:photo:{photo_id}"


@require_POST
@throttled
@needs_active_space
def shop_photo_search(request):
    if warmup := model_warmup():  # a random init's neighbours would be noise
        context = {"error": warmup.photo_message, "photo_error": True}
        response = render(request, "search/search.html", context, status=503)
        response["Retry-After"] = "60"
        return response
    params = PhotoInput(data=request.FILES)  # a missing file is "No file was submitted."
    if not params.is_valid():
        context = {"error": _first_message(params.errors), "photo_error": True}
        return render(request, "search/search.html", context, status=400)
    space = space_active()
    image = params.validated_data["image"]
    vector = np.asarray(image_vector(space, image), dtype=np.float32)
    # The vector waits in the cache under a random id that only this shopper's links carry:
    # no session row per anonymous photo search, and the id tells nothing about the photo.
    photo_id = secrets.token_urlsafe(16)
    try:
        cache.set(
            _photo_cache_key(photo_id),
            {"space": space.pk, "vector": vector.tobytes(), "thumbnail": photo_thumbnail(image)},
            timeout=settings.SEARCH_QUERY_CACHE_SECONDS,
        )
    except Exception:  # any backend's connection error: say so, never a 500
        logger.warning("photo search cache unreachable", exc_info=True)
        context = {"error": "Search by photo is unavailable right now: try again soon."}
        return render(request, "search/search.html", context, status=503)
    return redirect(f"{reverse('shop-search')}?photo={photo_id}")


def photo_thumbnail(image: Image.Image) -> bytes:
    """The photo at most PHOTO_THUMBNAIL_PIXELS on its longer side, as JPEG bytes (a few
    KB): what the results page shows of it, never the upload itself."""
    small = image.convert("RGB")
    small.thumbnail((PHOTO_THUMBNAIL_PIXELS, PHOTO_THUMBNAIL_PIXELS))
    out = io.BytesIO()
    small.save(out, format="JPEG", quality=PHOTO_THUMBNAIL_QUALITY)
    return out.getvalue()


def _photo_stored(photo_id: str):
    """(space, vector, thumbnail as a data: URI or "") of a photo search, or None."""
    try:
        stored = cache.get(_photo_cache_key(photo_id)) or {}
    except Exception:
        logger.warning("photo search cache unreachable", exc_info=True)
        stored = {}
    space = space_active()
    if stored.get("space") != space.pk:
        return None  # expired, never made, or the model changed: its vector means nothing now
    thumbnail = stored.get("thumbnail")
    # A data: URI (the policy's img-src allows data:): no second request, no route to the cache.
    uri = f"data:image/jpeg;base64,{base64.b64encode(thumbnail).decode()}" if thumbnail else ""
    return space, np.frombuffer(stored["vector"], dtype=np.float32), uri


@with_shop_session
@needs_active_space
def product_detail(request, pk: int):
    return product_page(request, _product_shown(request, pk))


def _product_shown(request, pk: int) -> Product:
    return get_object_or_404(
        products_shown_to(user=request.user).select_related("category").prefetch_related("images"),
        pk=pk,
    )


def product_page(request, product: Product, *, ask: dict | None = None, status: int = 200):
    """A product's page; `ask`: the ask box's question and its answer or error (views_ask)."""
    similar, search_id = [], None
    if model_warmup() is None:  # else the page's banner says that similar products wait
        page = search_logged(
            search_read(products_similar, product=product, limit=SIMILAR_ON_PAGE),
            kind=SearchLog.Kind.SIMILAR,
            channel=SearchLog.Channel.PAGE,
            source_product_id=product.pk,
            session=request.shop_session,
            client=client_ip(request),
        )
        similar, search_id = page.results, page.search_id
    return render(
        request,
        "search/product_detail.html",
        {
            "product": product,
            # Only staff reach a hidden product's page: tell them shoppers cannot.
            "hidden_from_shoppers": request.user.is_staff and product_hidden_from_shoppers(product),
            "similar": similar,
            "search_id": search_id,
            "click_prefix": click_url_prefix(search_id),
            "ask": ask or {},
        },
        status=status,
    )


def click_url_prefix(search_id) -> str:
    """`/click/<search_id>/`, which a result link ends with its product id: reversed once per
    page rather than once per link. Empty for a search that was not logged."""
    if search_id is None:
        return ""
    return reverse("shop-click", args=[search_id, 0]).removesuffix("0/")


@require_GET
@never_cache
def shop_result_click(request, search_id, product_id: int):
    """A result link followed without JavaScript: record the click, then show the product.

    Recorded only with the shop's session cookie of that search: an `<img>` on another site,
    a bookmark or another shopper's browser records nothing.
    It only ever redirects to that product's own page (never to a URL from the request).
    A click that cannot be recorded (the search expired, the product was not in it, the
    address is over its event rate) still reaches the product; a product that no longer
    exists is a 404."""
    product = get_object_or_404(Product.objects.only("pk"), pk=product_id)
    if EventRateThrottle().allow_request(request, None):
        try:
            # Only the search's own session: its cookie (SameSite=Lax) comes with a link
            # followed from anywhere, never with another site's <img> or form.
            search_event_record(
                search_id=search_id,
                type=SearchEvent.Type.CLICK,
                product_id=product.pk,
                session=request.COOKIES.get(settings.SEARCH_SESSION_COOKIE, ""),
            )
        except EventRefused as exc:
            logger.info("click not recorded: %s", exc)
    return redirect("product-detail", pk=product.pk)
