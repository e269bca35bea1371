from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.db.models import Count, Q
from django.utils.html import format_html

from catalog.importing import admin as import_admin  # noqa: F401 (the import pages)
from catalog.inferred import inferred_attributes_review, inferred_attributes_sync
from catalog.models import (
    MAX_OPTIONS,
    Category,
    Facet,
    FacetValueAlias,
    InferredAttribute,
    Product,
    ProductImage,
    ProductVariant,
)
from catalog.services import (
    product_images_save,
    product_save,
    product_variants_save,
)


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


class ProductVariantForm(forms.ModelForm):
    class Meta:
        model = ProductVariant
        fields = ["options"]  # and those the inline lists
        widgets = {"options": forms.TextInput(attrs={"size": 28})}

    def clean_options(self):
        options = self.cleaned_data["options"]
        if not isinstance(options, dict) or not all(
            isinstance(v, str) and v.strip() and n.strip() for n, v in options.items()
        ):
            raise forms.ValidationError('Option names and their values: {"Size": "M"}.')
        if len(options) > MAX_OPTIONS:
            raise forms.ValidationError(f"At most {MAX_OPTIONS} options.")
        return {n.strip(): v.strip() for n, v in options.items()}


class ProductVariantInline(admin.TabularInline):
    """A product's variants; the product's price, stock and options follow them on save."""

    model = ProductVariant
    form = ProductVariantForm
    extra = 0
    # Kept for the search log and orders that name its SKU: "active" off retires one.
    can_delete = False
    fields = [
        "sku",
        "options",
        "price",
        "compare_at_price",
        "stock",
        "in_stock",
        "barcode",
        "image",
        "photo",
        "position",
        "active",
    ]
    readonly_fields = ["photo"]

    def get_formset(self, request, obj=None, **kwargs):
        formset = super().get_formset(request, obj, **kwargs)
        # A variant shows one of its product's own photos (saved ones: none on the add page).
        images = ProductImage.objects.filter(product=obj) if obj else ProductImage.objects.none()
        formset.form.base_fields["image"].queryset = images
        return formset

    @admin.display(description="Photo")
    def photo(self, obj):
        return thumbnail(obj.image, 48)


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    """Products; the search app adds its "image vs title" column (search/admin/products.py)."""

    list_display = [
        "preview",
        "sku",
        "title",
        "brand",
        "category",
        "price_range",
        "currency",
        "variant_count",
        "in_stock",
        "status",
    ]
    list_display_links = ["preview", "sku", "title"]
    list_editable = ["status"]
    list_filter = ["status", "in_stock", "category", "brand"]
    search_fields = ["sku", "title", "brand", "variants__sku"]
    list_select_related = ["category"]
    readonly_fields = ["option_values", "price_max"]
    inlines = [ProductImageInline, ProductVariantInline]

    def get_queryset(self, request):
        active = Count("variants", filter=Q(variants__active=True))
        return (
            super().get_queryset(request).prefetch_related("images").annotate(variant_count=active)
        )

    @admin.display(description="Image")
    def preview(self, obj):
        return thumbnail(next(iter(obj.images.all()), None))

    @admin.display(description="Price", ordering="price")
    def price_range(self, obj):
        if obj.price_max is None or obj.price_max == obj.price:
            return obj.price
        return f"{obj.price}\u2013{obj.price_max}"

    @admin.display(description="Variants", ordering="variant_count")
    def variant_count(self, obj):
        return obj.variant_count

    @admin.display(description="Options")
    def option_values(self, obj):
        return "; ".join(f"{o['name']}: {', '.join(o['values'])}" for o in obj.options) or "-"

    def get_readonly_fields(self, request, obj=None):
        readonly = list(super().get_readonly_fields(request, obj))
        if obj is not None and obj.variants.exists():  # they follow its variants
            readonly += ["price", "compare_at_price", "in_stock"]
        return readonly

    def save_model(self, request, obj, form, change):
        product_save(product=obj, changed_fields=form.changed_data if change else ())

    def save_formset(self, request, form, formset, change):
        if formset.model is ProductVariant:
            product_variants_save(product=form.instance, variants=formset.save(commit=False))
            return None
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


class FacetValueAliasInline(admin.TabularInline):
    model = FacetValueAlias
    extra = 1
    fields = ["alias", "value"]


@admin.register(Facet)
class FacetAdmin(admin.ModelAdmin):
    """Which options and attributes are facets, in which order, and other names of values."""

    list_display = ["name", "label", "position", "inferred_threshold", "alias_count"]
    list_editable = ["label", "position", "inferred_threshold"]
    search_fields = ["name", "label", "aliases__alias", "aliases__value"]
    inlines = [FacetValueAliasInline]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if "inferred_threshold" in form.changed_data:
            # Values read from photos count, or stop counting, at the new threshold.
            inferred_attributes_sync()

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(alias_count=Count("aliases"))

    @admin.display(description="Aliases", ordering="alias_count")
    def alias_count(self, obj):
        return obj.alias_count


class InferredReviewForm(ActionForm):
    value = forms.CharField(required=False, max_length=200, help_text='for "Correct to this value"')


@admin.register(InferredAttribute)
class InferredAttributeAdmin(admin.ModelAdmin):
    """Values read from photos for products that miss them: confirm, correct or reject them
    in bulk. Confirmed ones (and suggestions at least as sure as their facet's threshold)
    count as facet values and filters; an entered value always wins."""

    list_display = ["photo", "product", "name", "value", "confidence_shown", "status", "space"]
    list_display_links = ["product"]
    list_filter = ["status", "name", "space"]
    search_fields = ["product__sku", "product__title", "value"]
    list_select_related = ["product"]
    readonly_fields = ["product", "name", "confidence", "space", "reviewed_by", "created"]
    fields = ["product", "name", "value", "status", "confidence", "space", "reviewed_by"]
    action_form = InferredReviewForm
    actions = ["confirm", "reject", "correct"]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("product__images")

    def has_add_permission(self, request):
        return False  # read from photos, not typed

    @admin.display(description="Photo")
    def photo(self, obj):
        images = list(obj.product.images.all())
        return thumbnail(images[0] if images else None, 48)

    @admin.display(description="Confidence", ordering="confidence")
    def confidence_shown(self, obj):
        return f"{obj.confidence:.0%}"

    def save_model(self, request, obj, form, change):
        inferred_attributes_review(
            ids=[obj.pk], status=obj.status, value=obj.value, user=request.user
        )

    def _review(self, request, queryset, status, value=None):
        try:
            changed = inferred_attributes_review(
                ids=queryset.values_list("pk", flat=True),
                status=status,
                value=value,
                user=request.user,
            )
        except ValueError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        noun = "value" if changed == 1 else "values"
        self.message_user(request, f"{changed} {noun} {status}.", messages.SUCCESS)

    @admin.action(description="Confirm the selected values", permissions=["change"])
    def confirm(self, request, queryset):
        self._review(request, queryset, InferredAttribute.Status.CONFIRMED)

    @admin.action(description="Reject the selected values", permissions=["change"])
    def reject(self, request, queryset):
        self._review(request, queryset, InferredAttribute.Status.REJECTED)

    @admin.action(description="Correct to this value (and confirm)", permissions=["change"])
    def correct(self, request, queryset):
        value = request.POST.get("value", "")
        self._review(request, queryset, InferredAttribute.Status.CONFIRMED, value=value)
