"""Shop pages: plain Django templates over the same selectors and input rules as the API."""

import base64
import functools
import hashlib

import numpy as np
from django.conf import settings
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST
from rest_framework import serializers

from catalog.models import Product
from embeddings.spaces import NoActiveSpace, space_active
from search.apis import SearchFiltersSerializer, UploadedImageField, non_blank
from search.selectors import (
    image_vector,
    product_search_by_text,
    products_nearest,
    products_similar,
)

# The API's one-line error message, so the page and the API say the same thing.
from shop_search.api import _first_message

PAGE_SIZE = 24
SIMILAR_ON_PAGE = 8
# The last uploaded photo's vector: results pages and filters are plain GET links after it.
PHOTO_SESSION_KEY = "photo_search"


class SearchPageInput(SearchFiltersSerializer):
    q = serializers.CharField(required=False, max_length=500, default="")
    correct = serializers.BooleanField(required=False, default=True)
    photo = serializers.CharField(required=False, max_length=64, default="")


class PhotoInput(serializers.Serializer):
    image = UploadedImageField()


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
        vector = _session_photo_vector(request, data["photo"])
        if vector is None:
            context["error"] = "That photo search has expired: upload the photo again."
        else:
            space, vector = vector
            page = products_nearest(
                space=space, vector=vector, filters=data["filters"], limit=PAGE_SIZE, offset=offset
            )
    elif data["q"]:
        page = product_search_by_text(
            query=data["q"],
            filters=data["filters"],
            limit=PAGE_SIZE,
            offset=offset,
            correct=data["correct"],
        )
    if page is not None:
        context.update(
            page=page,
            page_number=page_number,
            has_next=offset + PAGE_SIZE < page.count,
            has_previous=page_number > 1,
            filtered=bool(data["filters"]),
        )
    return render(request, "search/search.html", context)


@require_POST
@needs_active_space
def shop_photo_search(request):
    params = PhotoInput(data=request.FILES)  # a missing file is "No file was submitted."
    if not params.is_valid():
        context = {"error": _first_message(params.errors), "photo_error": True}
        return render(request, "search/search.html", context, status=400)
    space = space_active()
    vector = np.asarray(image_vector(space, params.validated_data["image"]), dtype=np.float32)
    photo_id = hashlib.sha256(vector.tobytes()).hexdigest()[:16]
    request.session[PHOTO_SESSION_KEY] = {
        "id": photo_id,
        "space": space.pk,
        "vector": base64.b64encode(vector.tobytes()).decode(),
    }
    return redirect(f"{reverse('shop-search')}?photo={photo_id}")


def _session_photo_vector(request, photo_id: str):
    stored = request.session.get(PHOTO_SESSION_KEY) or {}
    space = space_active()
    if stored.get("id") != photo_id or stored.get("space") != space.pk:
        return None  # another photo since, or the model changed: its vector means nothing now
    return space, np.frombuffer(base64.b64decode(stored["vector"]), dtype=np.float32)


@needs_active_space
def product_detail(request, pk: int):
    product = get_object_or_404(
        Product.objects.select_related("category").prefetch_related("images"), pk=pk
    )
    similar = products_similar(product=product, limit=SIMILAR_ON_PAGE)
    return render(
        request, "search/product_detail.html", {"product": product, "similar": similar.results}
    )
