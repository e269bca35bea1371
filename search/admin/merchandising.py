"""The merchandising rules' admin: pins, hides, boosts and buries, and a preview of the
ranked page beside them."""

from django import forms
from django.contrib import admin
from django.utils.formats import date_format
from django.utils.html import format_html

from catalog.models import Category
from catalog.selectors import category_nodes, category_subtree_ids
from embeddings.spaces import NoActiveSpace
from search.filters import SearchFilters
from search.models import MerchandisingRule, RuleBoost, RuleProduct
from search.pipeline import rule_preview
from search.rules import (
    boost_factor,
    merchandising_rule_save,
    merchandising_rules_set_enabled,
    rule_effects,
    rule_problems,
    rule_products_problems,
    rule_products_save,
    rule_state,
    rules_with_entries,
)


class RuleProductFormSet(forms.BaseInlineFormSet):
    """Pins and hides of one rule must not contradict each other."""

    def clean(self):
        super().clean()
        for form in self.forms:
            if "product" in form.changed_data and not form.cleaned_data.get("product"):
                form.add_error("product", "Choose a product.")
        entries = [
            (
                form.cleaned_data.get("action"),
                getattr(form.cleaned_data.get("product"), "pk", form.instance.product_id),
                form.cleaned_data.get("position"),
            )
            for form in self.forms
            if form.has_changed() or form.instance.pk
            if form.cleaned_data and not form.cleaned_data.get("DELETE")
        ]
        if problems := rule_products_problems(entries):
            raise forms.ValidationError(problems)


class RuleProductInline(admin.TabularInline):
    model = RuleProduct
    formset = RuleProductFormSet
    extra = 1
    fields = ["action", "product", "position", "product_state"]
    readonly_fields = ["product_state"]
    autocomplete_fields = ["product"]
    verbose_name = "pinned or hidden product"
    verbose_name_plural = "Pin or hide products"

    @admin.display(description="")
    def product_state(self, obj):
        if obj is None or obj.pk is None:
            return ""
        if obj.broken:
            return format_html(
                '<strong class="rule-broken" style="color:#ba2121">broken: product {} was '
                "deleted; choose another or delete this row</strong>",
                obj.product_sku or "?",
            )
        return obj.product_sku


class RuleBoostForm(forms.ModelForm):
    class Meta:
        model = RuleBoost
        fields = ["action", "kind", "brand", "category", "factor"]
        widgets = {
            "brand": forms.TextInput(attrs={"size": 16}),
            "factor": forms.NumberInput(attrs={"step": "0.5", "style": "width: 5em"}),
        }


class RuleBoostInline(admin.TabularInline):
    model = RuleBoost
    form = RuleBoostForm
    extra = 1
    fields = ["action", "kind", "brand", "category", "factor"]
    autocomplete_fields = ["category"]
    verbose_name = "boost or bury"
    verbose_name_plural = "Boost or bury by brand, category or stock"


@admin.register(MerchandisingRule)
class MerchandisingRuleAdmin(admin.ModelAdmin):
    """Rules with their pins, hides and boosts, and a preview of the ranked page beside them."""

    list_display = ["name", "trigger", "window", "state", "effects", "problems"]
    list_filter = ["enabled", "match"]
    search_fields = ["name", "query"]
    fieldsets = [
        (None, {"fields": ["name", "enabled", "problems"]}),
        ("When it applies", {"fields": ["query", "match", "category", "starts_at", "ends_at"]}),
    ]
    readonly_fields = ["problems"]
    autocomplete_fields = ["category"]
    inlines = [RuleProductInline, RuleBoostInline]
    actions = ["enable", "disable"]
    change_form_template = "admin/search/merchandisingrule/change_form.html"

    def get_fieldsets(self, request, obj=None):
        if obj is None:  # nothing can be broken before the rule exists
            (name, options), *rest = self.fieldsets
            fields = [f for f in options["fields"] if f != "problems"]
            return [(name, {**options, "fields": fields}), *rest]
        return self.fieldsets

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("category")
            .prefetch_related("products", "boosts__category")
        )

    @admin.display(description="When")
    def trigger(self, obj):
        parts = []
        if obj.query:
            how = "is" if obj.match == MerchandisingRule.Match.EXACT else "contains"
            parts.append(f"query {how} “{obj.query}”")
        if obj.category_id:
            parts.append(f"in {obj.category}")
        return " · ".join(parts) or "every search"

    @admin.display(description="Time window")
    def window(self, obj):
        if not obj.starts_at and not obj.ends_at:
            return "always"
        start = date_format(obj.starts_at, "SHORT_DATETIME_FORMAT") if obj.starts_at else "now"
        end = date_format(obj.ends_at, "SHORT_DATETIME_FORMAT") if obj.ends_at else "no end"
        return f"{start} – {end}"

    @admin.display(description="State")
    def state(self, obj):
        return rule_state(obj)

    @admin.display(description="Does")
    def effects(self, obj):
        entries = list(obj.products.all())
        pins = sum(1 for e in entries if e.action == RuleProduct.Action.PIN)
        hides = len(entries) - pins
        boosts = list(obj.boosts.all())
        parts = [
            f"{n} {what}{'s' if n != 1 else ''}"
            for n, what in ((pins, "pin"), (hides, "hide"))
            if n
        ] + [str(boost) for boost in boosts]
        return ", ".join(parts) or "nothing yet"

    @admin.display(description="Problems")
    def problems(self, obj):
        problems = rule_problems(obj) if obj.pk else []
        if not problems:
            return "-"
        return format_html(
            '<strong class="rule-broken" style="color:#ba2121">broken: {}</strong>',
            "; ".join(problems),
        )

    def save_model(self, request, obj, form, change):
        merchandising_rule_save(rule=obj)

    def save_formset(self, request, form, formset, change):
        if formset.model is not RuleProduct:
            return super().save_formset(request, form, formset, change)
        rule_products_save(rule_products=formset.save(commit=False))
        for entry in formset.deleted_objects:
            entry.delete()
        return None

    def change_view(self, request, object_id, form_url="", extra_context=None):
        rule = self.get_object(request, object_id)
        extra_context = {**(extra_context or {}), "preview": self.preview(request, rule)}
        return super().change_view(request, object_id, form_url, extra_context)

    def preview(self, request, rule):
        """The ranked page for the rule's query (or the one typed beside it)."""
        if rule is None:
            return None
        query = request.GET.get("preview_q", rule.query).strip()[:500]
        slug = request.GET.get("preview_category", rule.category.slug if rule.category else "")
        category = Category.objects.filter(slug=slug).first() if slug else None
        context = {"query": query, "category": category, "categories": Category.objects.all()}
        if not query:
            return {**context, "message": "Type a query to preview the ranked page."}
        filters = SearchFilters(
            category_ids=tuple(category_subtree_ids(category=category)) if category else ()
        )
        try:
            result = rule_preview(rule=rule, query=query, filters=filters)
        except NoActiveSpace as exc:
            return {**context, "message": str(exc)}
        effects = rule_effects(rules_with_entries(MerchandisingRule.objects.filter(pk=rule.pk)))
        nodes = category_nodes() if effects.boosts else {}
        rows = []
        for position, hit in enumerate(result.with_rule.results, start=1):
            factor = boost_factor(hit.product, effects.boosts, nodes) if effects.boosts else 1.0
            rows.append(
                {
                    "position": position,
                    "hit": hit,
                    "image": next(iter(hit.product.images.all()), None),
                    "was": result.positions_without.get(hit.product.pk),
                    "factor": factor,
                    "boost": f"×{factor:g}"
                    if factor > 1
                    else f"÷{1 / factor:g}"
                    if factor < 1
                    else "",
                }
            )
        return {**context, "result": result, "rows": rows}

    @admin.action(description="Enable the selected rules")
    def enable(self, request, queryset):
        count = merchandising_rules_set_enabled(
            rule_ids=queryset.values_list("pk", flat=True), enabled=True
        )
        self.message_user(request, f"{count} rule(s) enabled.")

    @admin.action(description="Disable the selected rules")
    def disable(self, request, queryset):
        count = merchandising_rules_set_enabled(
            rule_ids=queryset.values_list("pk", flat=True), enabled=False
        )
        self.message_user(request, f"{count} rule(s) disabled.")
