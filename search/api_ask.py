"""POST /api/ask/: a question about a product's photo (by `product_id`) or an uploaded one,
answered in the question's language (search.ask)."""

import dataclasses
import unicodedata
from collections.abc import Mapping

from django.conf import settings
from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response

from search.api_common import (
    SEARCH_ID_HELP,
    ProductHitSerializer,
    SearchApiView,
    SessionField,
    UploadedImageField,
    non_blank,
)
from search.api_photos import CaptionSerializer
from search.ask import PhotoMissing, photo_question_answer
from search.models import SearchLog
from search.questions import TYPES
from search.searchlog import search_logged
from search.selectors import products_shown_to
from shop_search.api import ErrorSerializer
from shop_search.db_routers import search_read
from shop_search.throttling import client_ip

QUESTION_MAX_LENGTH = 500
ASK_HELP = (
    "describe (the photo in a sentence, and the catalog captions nearest it), find (products "
    "by the question's words), attribute (colour, pattern, material, category or audience), "
    "yes_no (about one of those values), unsupported (prices, sizes, counts, stock: what a "
    "photo cannot show; and any language but English and Chinese)"
)


class QuestionField(serializers.CharField):
    """A question as a shopper types it: text, not bytes or control characters."""

    def __init__(self, **kwargs):
        message = "Ask a question about the photo."
        too_long = f"The question is too long: at most {QUESTION_MAX_LENGTH} characters."
        super().__init__(
            max_length=QUESTION_MAX_LENGTH,
            error_messages={"blank": message, "required": message, "max_length": too_long},
            help_text="in English or Chinese, at most 500 characters",
            **kwargs,
        )

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        # U+FFFD: bytes a form field could not decode as text.
        if "\ufffd" in value or any(
            unicodedata.category(ch) in ("Cc", "Cs", "Co") and ch not in "\t\n\r" for ch in value
        ):
            raise serializers.ValidationError(
                "The question must be text: it holds control characters or undecodable bytes."
            )
        if not any(ch.isalpha() for ch in value):
            raise serializers.ValidationError("The question must have words in it.")
        return " ".join(value.split())


class ValueSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="the attribute: colour, pattern, material...")
    value = serializers.CharField(help_text="the catalog's value, as products store it")
    label = serializers.CharField(help_text="the value in the question's language")
    confidence = serializers.FloatField(help_text="calibrated probability, 0..1")


class EvidenceSerializer(serializers.Serializer):
    attributes = ValueSerializer(
        many=True, help_text="the photo's attributes the answer rests on (describe, attribute)"
    )
    captions = CaptionSerializer(many=True, help_text="describe: the captions nearest the photo")
    products = ProductHitSerializer(many=True, help_text="find: the products found")


class PhotoQuestionApi(SearchApiView):
    parser_classes = [JSONParser, MultiPartParser, FormParser]

    @extend_schema_serializer(component_name="PhotoQuestion")
    class InputSerializer(serializers.Serializer):
        question = QuestionField()
        product_id = serializers.IntegerField(
            required=False,
            min_value=1,
            help_text="ask about this product's photo (its stored vector; nothing is encoded)",
            error_messages={"invalid": "Give a product's id (a whole number)."},
        )
        image = UploadedImageField(
            required=False, help_text="or upload a photo (multipart): JPEG, PNG, WebP or GIF"
        )
        limit = serializers.IntegerField(
            min_value=1,
            max_value=settings.SEARCH_MAX_LIMIT,
            default=5,
            help_text="captions (describe) or products (find) in the evidence",
        )
        session = SessionField()

        def validate_product_id(self, pk):
            user = self.context["request"].user
            product = products_shown_to(user=user).filter(pk=pk).first()
            if product is None:
                raise serializers.ValidationError(f"Unknown product {pk}.")
            if not product.images.exists():
                raise serializers.ValidationError(f"Product {pk} has no photo to ask about.")
            return product

        def validate(self, data):
            if ("product_id" in data) == ("image" in data):
                raise serializers.ValidationError(
                    {"image": ["Send either a photo (image) or a product_id, not both or neither."]}
                )
            return data

    @extend_schema_serializer(component_name="PhotoAnswer")
    class OutputSerializer(serializers.Serializer):
        space = serializers.CharField(source="space.name")
        type = serializers.ChoiceField(choices=TYPES, help_text=ASK_HELP)
        lang = serializers.ChoiceField(
            choices=["en", "zh", ""],
            help_text="the question's language; empty for another (then `type` is unsupported "
            "and the answer is in English and Chinese)",
        )
        attribute = serializers.CharField(help_text="attribute, yes_no: which; else empty")
        answer = serializers.CharField(help_text="in the question's language")
        confidence = serializers.FloatField(
            allow_null=True,
            help_text="calibrated probability that the answer is right (describe: the mean of "
            "its attributes'); null for find and unsupported",
        )
        alternatives = ValueSerializer(many=True, help_text="the runner-up values, best first")
        evidence = EvidenceSerializer(source="*")
        search_id = serializers.UUIDField(
            source="page.search_id", allow_null=True, help_text="find: " + SEARCH_ID_HELP
        )

    @extend_schema(
        operation_id="ask_about_photo",
        summary="Ask a question about a product photo",
        description="A `question` in English or Chinese about a product's photo (`product_id`, "
        "JSON or form) or an uploaded one (multipart `image`). The type of question comes "
        "from a classifier (keywords, the catalog's values, prototype questions); attribute "
        "and yes/no answers are CLIP zero-shot over the catalog's own values, with a "
        "calibrated confidence and the runner-ups.",
        request={
            "application/json": InputSerializer,
            "multipart/form-data": InputSerializer,
        },
        responses={200: OutputSerializer, 400: ErrorSerializer},
    )
    def post(self, request):
        # A JSON body that is no object ([], "x") is the serializer's to refuse, by name.
        body = non_blank(request.data) if isinstance(request.data, Mapping) else request.data
        params = self.InputSerializer(data=body, context={"request": request})
        params.is_valid(raise_exception=True)
        data = params.validated_data
        try:
            answer = search_read(
                photo_question_answer,
                question=data["question"],
                product=data.get("product_id"),
                image=data.get("image"),
                limit=data["limit"],
            )
        except PhotoMissing as exc:
            raise serializers.ValidationError({"product_id": [str(exc)]}) from exc
        if answer.page is not None:  # a find is a text search: logged like one
            page = search_logged(
                answer.page,
                kind=SearchLog.Kind.TEXT,
                channel=SearchLog.Channel.API,
                query=data["question"],
                session=data.get("session", ""),
                client=client_ip(request),
            )
            answer = dataclasses.replace(answer, page=page)
        return Response(self.OutputSerializer(answer, context={"request": request}).data)
