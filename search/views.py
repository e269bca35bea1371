"""Shop pages: plain Django templates over the same selectors and input rules as the API."""

import functools
import logging
import secrets

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST
from rest_framework import serializers

from catalog.models import Product
from embeddings.spaces import NoActiveSpace, space_active
from search.apis import SearchFiltersSerializer, SortField, UploadedImageField, non_blank
from search.selectors import (
    image_vector,
    product_search_by_text,
    products_nearest,
    products_similar,
)
from search.sorting import Sort

# The API's one-line error message, so the page and the API say the same thing.
from shop_search.api import _first_message
from shop_search.throttling import anonymous_throttle_wait

logger = logging.getLogger(__name__)

PAGE_SIZE = 24
SIMILAR_ON_PAGE = 8


class SearchPageInput(SearchFiltersSerializer):
    q = serializers.CharField(required=False, max_length=500, default="")
    correct = serializers.BooleanField(required=False, default=True)
    photo = serializers.CharField(required=False, max_length=64, default="")
    sort = SortField()


class PhotoInput(serializers.Serializer):
    image = UploadedImageField()


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
    if data["photo"]:
        vector = _photo_vector(data["photo"])
        if vector is None:
            context["error"] = "That photo search has expired: upload the photo again."
        else:
            space, vector = vector
            page = products_nearest(
                space=space,
                vector=vector,
                filters=data["filters"],
                limit=PAGE_SIZE,
                offset=offset,
                sort=data["sort"],
            )
    elif data["q"]:
        page = product_search_by_text(
            query=data["q"],
            filters=data["filters"],
            limit=PAGE_SIZE,
            offset=offset,
            sort=data["sort"],
            correct=data["correct"],
        )
    if page is not None:
        context.update(
            page=page,
            page_number=page_number,
            has_next=offset + PAGE_SIZE < page.count,
            has_previous=page_number > 1,
            filtered=bool(data["filters"]),
            sorts=Sort.choices,
            matches=[hit for hit in page.results if not hit.related],
            related=[hit for hit in page.results if hit.related],
        )
    return render(request, "search/search.html", context)


def _photo_cache_key(photo_id: str) -> str:
    return f"search:photo:{photo_id}"


@require_POST
@throttled
@needs_active_space
def shop_photo_search(request):
    params = PhotoInput(data=request.FILES)  # a missing file is "No file was submitted."
    if not params.is_valid():
        context = {"error": _first_message(params.errors), "photo_error": True}
        return render(request, "search/search.html", context, status=400)
    space = space_active()
    vector = np.asarray(image_vector(space, params.validated_data["image"]), dtype=np.float32)
    # The vector waits in the cache under a random id that only this shopper's links carry:
    # no session row per anonymous photo search, and the id tells nothing about the photo.
    photo_id = secrets.token_urlsafe(16)
    try:
        cache.set(
            _photo_cache_key(photo_id),
            {"space": space.pk, "vector": vector.tobytes()},
            timeout=settings.SEARCH_QUERY_CACHE_SECONDS,
        )
    except Exception:  # any backend's connection error: say so, never a 500
        logger.warning("photo search cache unreachable", exc_info=True)
        context = {"error": "Search by photo is unavailable right now: try again soon."}
        return render(request, "search/search.html", context, status=503)
    return redirect(f"{reverse('shop-search')}?photo={photo_id}")


def _photo_vector(photo_id: str):
    try:
        stored = cache.get(_photo_cache_key(photo_id)) or {}
    except Exception:
        logger.warning("photo search cache unreachable", exc_info=True)
        stored = {}
    space = space_active()
    if stored.get("space") != space.pk:
        return None  # expired, never made, or the model changed: its vector means nothing now
    return space, np.frombuffer(stored["vector"], dtype=np.float32)


@needs_active_space
def product_detail(request, pk: int):
    product = get_object_or_404(
        Product.objects.select_related("category").prefetch_related("images"), pk=pk
    )
    similar = products_similar(product=product, limit=SIMILAR_ON_PAGE)
    return render(
        request, "search/product_detail.html", {"product": product, "similar": similar.results}
    )
