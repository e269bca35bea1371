"""The product page's ask box: a question about the product's photo, answered on its page
(server-rendered, no script) by the same selector as POST /api/ask/."""

from django.views.decorators.http import require_POST
from rest_framework import serializers

from embeddings.selectors import model_warmup
from search.api_ask import QuestionField
from search.ask import PhotoMissing, photo_question_answer
from search.views import (
    _product_shown,
    needs_active_space,
    product_page,
    throttled,
    with_shop_session,
)
from shop_search.api import _first_message
from shop_search.db_routers import search_read


class AskInput(serializers.Serializer):
    question = QuestionField()


@require_POST
@throttled
@with_shop_session
@needs_active_space
def product_ask(request, pk: int):
    product = _product_shown(request, pk)
    params = AskInput(data=request.POST)
    ask = {"question": request.POST.get("question", "")[:500]}
    if not params.is_valid():
        ask["error"] = _first_message(params.errors["question"])
        return product_page(request, product, ask=ask, status=400)
    if warmup := model_warmup():  # a random init's answers would be noise
        ask["error"] = f"Questions about photos wait for the shop's model. {warmup.message}"
        return product_page(request, product, ask=ask, status=503)
    try:
        ask["answer"] = search_read(
            photo_question_answer, question=params.validated_data["question"], product=product
        )
    except PhotoMissing as exc:
        ask["error"] = str(exc)
        return product_page(request, product, ask=ask, status=400)
    return product_page(request, product, ask=ask)
