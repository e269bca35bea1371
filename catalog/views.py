"""Shop pages: plain Django templates over the same selectors as the API."""

from django.conf import settings
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, render

from catalog.models import Product
from embeddings.selectors import product_search_by_text

PAGE_SIZE = 24


def shop_search(request):
    query = request.GET.get("q", "").strip()[:500]
    context = {"query": query, "page": None}
    if query:
        page_number = (
            Paginator(range(settings.SEARCH_MAX_RESULTS), PAGE_SIZE)
            .get_page(request.GET.get("page"))
            .number
        )
        offset = (page_number - 1) * PAGE_SIZE
        result = product_search_by_text(query=query, limit=PAGE_SIZE, offset=offset)
        context.update(
            page=result,
            page_number=page_number,
            has_next=offset + PAGE_SIZE < result.count,
            has_previous=page_number > 1,
        )
    return render(request, "catalog/search.html", context)


def product_detail(request, pk: int):
    product = get_object_or_404(
        Product.objects.select_related("category").prefetch_related("images"), pk=pk
    )
    return render(request, "catalog/product_detail.html", {"product": product})
