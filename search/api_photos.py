"""Photo question APIs: how well a text describes a photo, and the catalog captions that
describe it best."""

from django.conf import settings
from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.response import Response

from search.api_common import UploadApiView, UploadedImageField, non_blank
from search.selectors import captions_by_image, image_text_match
from shop_search.api import ErrorSerializer
from shop_search.db_routers import search_read


class CaptionSerializer(serializers.Serializer):
    product_id = serializers.IntegerField()
    field = serializers.CharField(help_text="title, title_<lang> or description")
    text = serializers.CharField()
    score = serializers.FloatField(help_text="cosine similarity to the image")


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
        match = search_read(
            image_text_match,
            image=params.validated_data["image"],
            text=params.validated_data["text"],
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
        space, hits = search_read(
            captions_by_image,
            image=params.validated_data["image"],
            limit=params.validated_data["limit"],
        )
        return Response(self.OutputSerializer({"space": space, "results": hits}).data)
