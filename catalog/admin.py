from django.contrib import admin
from django.utils.html import format_html

from catalog.importing import admin as import_admin  # noqa: F401 (the import pages)
from catalog.models import Category, Product, ProductImage
from catalog.services import product_images_save, product_save


def thumbnail(image: ProductImage | None, size: int = 64) -> str:
    if not image or not image.file:
        return "-"
    return format_html(
        '<img src="{}" alt="" style="height:{}px;width:{}px;object-fit:cover;border-radius:4px">',
        image.file.url,
        size,
        size,
    )


@admin.register(Category)
class CategoryAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "parent"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}


class ProductImageInline(admin.TabularInline):
    model = ProductImage
    extra = 1
    fields = ["preview", "file", "position", "width", "height", "sha256"]
    readonly_fields = ["preview", "width", "height", "sha256"]

    @admin.display(description="Image")
    def preview(self, obj):
        return thumbnail(obj, 96)


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    """Products; the search app adds its "image vs title" column (search/admin/products.py)."""

    list_display = [
        "preview",
        "sku",
        "title",
        "brand",
        "category",
        "price",
        "currency",
        "in_stock",
        "status",
    ]
    list_display_links = ["preview", "sku", "title"]
    list_filter = ["status", "in_stock", "category", "brand"]
    search_fields = ["sku", "title", "brand"]
    list_select_related = ["category"]
    inlines = [ProductImageInline]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("images")

    @admin.display(description="Image")
    def preview(self, obj):
        return thumbnail(next(iter(obj.images.all()), None))

    def save_model(self, request, obj, form, change):
        product_save(product=obj, changed_fields=form.changed_data if change else ())

    def save_formset(self, request, form, formset, change):
        if formset.model is not ProductImage:
            return super().save_formset(request, form, formset, change)
        images = formset.save(commit=False)
        product_images_save(
            images=[(image, "file" in _changed_fields(formset, image)) for image in images]
        )
        for image in formset.deleted_objects:
            image.delete()
        formset.save_m2m()
        return None


def _changed_fields(formset, instance) -> list[str]:
    for form in formset.forms:
        if form.instance is instance:
            return form.changed_data
    return []


@admin.register(ProductImage)
class ProductImageAdmin(admin.ModelAdmin):
    """Images; the embeddings app adds their embedding status (embeddings/admin.py)."""

    list_display = ["preview", "product", "position", "width", "height"]
    list_select_related = ["product"]
    search_fields = ["product__sku", "product__title", "sha256"]
    readonly_fields = ["preview", "sha256", "width", "height"]
    fields = ["preview", "product", "file", "position", "width", "height", "sha256"]
    raw_id_fields = ["product"]

    @admin.display(description="Image")
    def preview(self, obj):
        return thumbnail(obj)

    def save_model(self, request, obj, form, change):
        product_images_save(images=[(obj, "file" in form.changed_data)])
