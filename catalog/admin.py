from django.contrib import admin
from django.db.models import Exists, OuterRef, Subquery
from django.utils.html import format_html

from catalog.importing import admin as import_admin  # noqa: F401 (the import pages)
from catalog.models import Category, Product, ProductImage
from catalog.services import product_image_fill_metadata
from embeddings.models import ImageEmbedding
from embeddings.selectors import product_image_title_agree
from embeddings.services import embeddings_queue, space_get_active


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
    list_display = [
        "preview",
        "sku",
        "title",
        "brand",
        "category",
        "price",
        "currency",
        "in_stock",
        "image_title_check",
    ]
    list_display_links = ["preview", "sku", "title"]
    list_filter = ["in_stock", "category", "brand"]
    search_fields = ["sku", "title", "brand"]
    list_select_related = ["category"]
    readonly_fields = ["image_title_check"]
    inlines = [ProductImageInline]

    def get_queryset(self, request):
        # Computed for the page shown only: one nearest-captions scan per product.
        agree = product_image_title_agree(space_get_active())
        return super().get_queryset(request).prefetch_related("images").annotate(agree=agree)

    @admin.display(description="Image")
    def preview(self, obj):
        return thumbnail(next(iter(obj.images.all()), None))

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

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if not change or {"title", "description", "attributes"} & set(form.changed_data):
            embeddings_queue(product_ids=[obj.pk])

    def save_formset(self, request, form, formset, change):
        if formset.model is not ProductImage:
            return super().save_formset(request, form, formset, change)
        images = formset.save(commit=False)
        changed = []
        for image in images:
            if image._state.adding or "file" in _changed_fields(formset, image):
                product_image_fill_metadata(image)
                changed.append(image)
            image.save()
        for image in formset.deleted_objects:
            image.delete()
        formset.save_m2m()
        embeddings_queue(image_ids=[image.pk for image in changed])


def _changed_fields(formset, instance) -> list[str]:
    for form in formset.forms:
        if form.instance is instance:
            return form.changed_data
    return []


@admin.register(ProductImage)
class ProductImageAdmin(admin.ModelAdmin):
    list_display = ["preview", "product", "position", "width", "height", "embedding_status"]
    list_select_related = ["product"]
    search_fields = ["product__sku", "product__title", "sha256"]
    readonly_fields = ["preview", "sha256", "width", "height", "embedding_status"]
    fields = [
        "preview",
        "product",
        "file",
        "position",
        "width",
        "height",
        "sha256",
        "embedding_status",
    ]
    raw_id_fields = ["product"]

    def get_queryset(self, request):
        # Status comes from the active space's embedding rows, not a stored flag.
        rows = ImageEmbedding.objects.filter(image=OuterRef("pk"), space=space_get_active())
        return (
            super()
            .get_queryset(request)
            .annotate(
                has_embedding=Exists(rows.filter(vector__isnull=False)),
                embedding_error=Subquery(rows.values("error")[:1]),
            )
        )

    @admin.display(description="Image")
    def preview(self, obj):
        return thumbnail(obj)

    @admin.display(description="Embedding")
    def embedding_status(self, obj):
        if getattr(obj, "has_embedding", False):
            return "embedded"
        if getattr(obj, "embedding_error", None):
            return format_html(
                '<span title="{}">failed: {}</span>', obj.embedding_error, obj.embedding_error[:80]
            )
        return "pending"

    def save_model(self, request, obj, form, change):
        if not change or "file" in form.changed_data:
            product_image_fill_metadata(obj)
        super().save_model(request, obj, form, change)
        if not change or "file" in form.changed_data:
            embeddings_queue(image_ids=[obj.pk])
