"""JSON API: thin views that validate input, call one selector, serialize the result."""

from django.conf import settings
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from embeddings.encoder import ImageDecodeError, decode_image
from embeddings.selectors import captions_by_image, product_search_by_text


def validated_upload_image(upload):
    """The uploaded file decoded as an RGB image, or a ValidationError that says why not."""
    limit = settings.MAX_UPLOAD_IMAGE_BYTES
    if upload.size > limit:
        raise serializers.ValidationError(
            f"image is {upload.size / 1e6:.1f} MB, over the limit of {limit / 1e6:.1f} MB"
        )
    try:
        return decode_image(upload, max_pixels=settings.MAX_IMAGE_PIXELS)
    except ImageDecodeError as exc:
        raise serializers.ValidationError(str(exc)) from exc


class UploadedImageField(serializers.FileField):
    def to_internal_value(self, data):
        return validated_upload_image(super().to_internal_value(data))


class ProductSearchApi(APIView):
    class InputSerializer(serializers.Serializer):
        q = serializers.CharField(
            max_length=500,
            error_messages={"blank": "Enter a search query.", "required": "Enter a search query."},
        )
        limit = serializers.IntegerField(
            min_value=1, max_value=settings.SEARCH_MAX_LIMIT, default=settings.SEARCH_DEFAULT_LIMIT
        )
        offset = serializers.IntegerField(min_value=0, max_value=10_000, default=0)

    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField(source="product.id")
        sku = serializers.CharField(source="product.sku")
        title = serializers.CharField(source="product.title")
        price = serializers.DecimalField(source="product.price", max_digits=12, decimal_places=2)
        currency = serializers.CharField(source="product.currency")
        image_url = serializers.SerializerMethodField()
        score = serializers.FloatField()

        def get_image_url(self, hit):
            images = list(hit.product.images.all())
            if not images:
                return None
            return self.context["request"].build_absolute_uri(images[0].file.url)

    def get(self, request):
        params = self.InputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        page = product_search_by_text(
            query=params.validated_data["q"],
            limit=params.validated_data["limit"],
            offset=params.validated_data["offset"],
        )
        results = self.OutputSerializer(page.results, many=True, context={"request": request})
        return Response({"count": page.count, "space": page.space.name, "results": results.data})


class ImageCaptionsApi(APIView):
    class InputSerializer(serializers.Serializer):
        image = UploadedImageField()
        limit = serializers.IntegerField(
            min_value=1, max_value=settings.SEARCH_MAX_LIMIT, default=10
        )

    class OutputSerializer(serializers.Serializer):
        product_id = serializers.IntegerField()
        field = serializers.CharField()
        text = serializers.CharField()
        score = serializers.FloatField()

    def post(self, request):
        params = self.InputSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        space, hits = captions_by_image(
            image=params.validated_data["image"], limit=params.validated_data["limit"]
        )
        return Response(
            {"space": space.name, "results": self.OutputSerializer(hits, many=True).data}
        )
