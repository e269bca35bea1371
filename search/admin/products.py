"""The catalog's product admin, extended with a flag where a photo and its title disagree."""

from django.contrib import admin
from django.utils.html import format_html

from catalog.admin import ProductAdmin
from catalog.models import Product
from embeddings.spaces import space_active_or_none
from search.ranking import product_image_title_agree

admin.site.unregister(Product)


@admin.register(Product)
class ProductSearchAdmin(ProductAdmin):
    """The catalog's product admin, with a flag where a photo and its title disagree."""

    list_display = [*ProductAdmin.list_display, "image_title_check"]
    readonly_fields = [*ProductAdmin.readonly_fields, "image_title_check"]

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        space = space_active_or_none()
        if space is None:
            return queryset
        # Computed for the page shown only: one nearest-captions scan per product.
        return queryset.annotate(agree=product_image_title_agree(space))

    @admin.display(description="Image vs title")
    def image_title_check(self, obj):
        agree = getattr(obj, "agree", None)
        if agree is None:
            return "-"  # photo or title not embedded yet
        if agree:
            return "ok"
        return format_html(
            '<strong style="color:#ba2121" title="{}">image and title disagree</strong>',
            "the title is not among the captions that best describe the main photo",
        )
