import csv
import re

from django import forms
from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.formats import date_format
from django.utils.html import format_html

from catalog.admin import ProductAdmin
from catalog.models import Category, Product
from catalog.selectors import category_nodes, category_subtree_ids
from embeddings.charts import line_chart_svg
from embeddings.models import EmbeddingSpace
from embeddings.spaces import NoActiveSpace, space_active_or_none
from search.insights import (
    EXPORT_TABLES,
    DayStats,
    InsightsRange,
    InsightsRangeInvalid,
    insights_export_rows,
    insights_summary,
    insights_zero_result_clusters,
    insights_zero_result_queries,
)
from search.interleaving import (
    InterleavingError,
    interleaving_test_promote,
    interleaving_test_stop,
    interleaving_test_tally,
)
from search.models import (
    InterleavingTest,
    MerchandisingRule,
    RuleBoost,
    RuleProduct,
    SearchLog,
    SynonymSet,
)
from search.pipeline import rule_preview
from search.ranking import product_image_title_agree
from search.retrieval import SearchFilters
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
from search.services import interleaving_test_start
from search.synonyms import synonym_set_save, synonym_sets_set_enabled
from search.terms import term_key

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


# --- synonyms -----------------------------------------------------------------------------


class TermsField(forms.CharField):
    """Terms typed as one line, separated by commas (also Chinese ones: “，”)."""

    def prepare_value(self, value):
        return ", ".join(value) if isinstance(value, list | tuple) else value

    def to_python(self, value):
        text = super().to_python(value) or ""
        return [term.strip() for term in re.split("[,，、]", text) if term.strip()]


class SynonymSetForm(forms.ModelForm):
    terms = TermsField(
        max_length=2000,
        help_text="comma-separated, e.g. “tee, t-shirt” (two-way), or “handbag, backpack” "
        "with “bag” as the one-way root",
    )

    class Meta:
        model = SynonymSet
        fields = ["root", "terms", "enabled"]


@admin.register(SynonymSet)
class SynonymSetAdmin(admin.ModelAdmin):
    """Synonym sets: saved through synonym_set_save; a set needs two terms (or a root and one)."""

    form = SynonymSetForm
    list_display = ["synonyms", "direction", "enabled", "updated"]
    list_filter = ["enabled"]
    search_fields = ["root"]
    actions = ["enable", "disable"]

    @admin.display(description="Synonyms")
    def synonyms(self, obj):
        return str(obj)

    @admin.display(description="Direction")
    def direction(self, obj):
        return f"one-way from “{obj.root}”" if obj.root else "two-way"

    def get_search_results(self, request, queryset, search_term):
        found, duplicates = super().get_search_results(request, queryset, search_term)
        if search_term:  # a term, in the sets the list's filters left
            found |= queryset.filter(terms__contains=[term_key(search_term)])
        return found, duplicates

    def save_model(self, request, obj, form, change):
        synonym_set_save(synonym_set=obj)

    @admin.action(description="Enable the selected synonym sets")
    def enable(self, request, queryset):
        count = synonym_sets_set_enabled(
            synonym_set_ids=queryset.values_list("pk", flat=True), enabled=True
        )
        self.message_user(request, f"{count} synonym set(s) enabled.")

    @admin.action(description="Disable the selected synonym sets")
    def disable(self, request, queryset):
        count = synonym_sets_set_enabled(
            synonym_set_ids=queryset.values_list("pk", flat=True), enabled=False
        )
        self.message_user(request, f"{count} synonym set(s) disabled.")


# --- merchandising rules ------------------------------------------------------------------


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


# --- interleaving tests -------------------------------------------------------------------


class InterleavingTestStartForm(forms.ModelForm):
    """Adding a test starts it: a candidate space against the active one."""

    class Meta:
        model = InterleavingTest
        fields = ["candidate"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["candidate"].queryset = EmbeddingSpace.objects.filter(
            status=EmbeddingSpace.Status.CANDIDATE
        ).order_by("-created")
        self.fields["candidate"].help_text = (
            "a candidate space (a fine-tune's result); it is filled and indexed first if it "
            "was not, then SEARCH_INTERLEAVE_FRACTION of text searches merge its ranking with "
            "the active space's"
        )


@admin.register(InterleavingTest)
class InterleavingTestAdmin(admin.ModelAdmin):
    list_display = ["__str__", "status", "started", "ended", "tally", "p_value"]
    list_filter = ["status"]
    readonly_fields = [
        "candidate",
        "control",
        "status",
        "created",
        "started",
        "ended",
        "tally",
        "p_value",
        "decision",
    ]
    exclude = ["result"]
    actions = ["stop", "promote"]

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = InterleavingTestStartForm
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(self, request, obj=None):
        return ["candidate"] if obj is None else self.readonly_fields

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request, obj)

    def save_model(self, request, obj, form, change):
        # The service creates the row (one test at a time, under a lock); the admin then
        # shows that row.
        try:
            test = interleaving_test_start(candidate=form.cleaned_data["candidate"])
        except InterleavingError as exc:
            raise forms.ValidationError(str(exc)) from exc
        obj.pk = test.pk
        obj.refresh_from_db()

    def add_view(self, request, form_url="", extra_context=None):
        try:
            return super().add_view(request, form_url, extra_context)
        except forms.ValidationError as exc:
            self.message_user(request, exc.messages[0], level="error")
            return HttpResponseRedirect(reverse("admin:search_interleavingtest_changelist"))

    def _tally(self, obj):
        # One aggregate per test and page, for both columns.
        if not hasattr(obj, "_tally"):
            obj._tally = interleaving_test_tally(obj)
        return obj._tally

    @admin.display(description="searches · wins · ties")
    def tally(self, obj):
        tally = self._tally(obj)
        return (
            f"{tally.searches} searches, {tally.decided} with clicks · candidate "
            f"{tally.candidate_wins}, active {tally.control_wins} · {tally.ties} ties"
        )

    @admin.display(description="sign test p")
    def p_value(self, obj):
        return f"{self._tally(obj).p_value:.4f}"

    @admin.action(description="Stop the selected tests (the candidate stays a candidate)")
    def stop(self, request, queryset):
        for test in queryset.filter(status__in=InterleavingTest.UNFINISHED):
            interleaving_test_stop(test=test, decision=f"stopped by {request.user}")
            self.message_user(request, f"Stopped the test of {test.candidate}.")

    @admin.action(description="Promote the selected tests' candidates now")
    def promote(self, request, queryset):
        for test in queryset.filter(status=InterleavingTest.Status.RUNNING):
            interleaving_test_promote(
                test=test,
                decision=f"promoted by {request.user}; {interleaving_test_tally(test)}",
            )
            self.message_user(request, f"Activating {test.candidate} (filled, then switched).")


# --- search log and insights --------------------------------------------------------------


class InsightsFilterForm(forms.Form):
    """The insights page's filters, from the query string (empty: the last 30 days)."""

    start = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    space = forms.ModelChoiceField(
        EmbeddingSpace.objects.order_by("-created"), required=False, empty_label="all spaces"
    )
    export = forms.ChoiceField(choices=[("", "")] + [(t, t) for t in EXPORT_TABLES], required=False)

    def clean(self):
        data = super().clean()
        default = InsightsRange.last_days(30)
        space = data.get("space")
        try:
            data["window"] = InsightsRange(
                start=data.get("start") or default.start,
                end=data.get("end") or default.end,
                space_id=space.pk if space else None,
            )
        except InsightsRangeInvalid as exc:
            raise forms.ValidationError(str(exc)) from exc
        return data


@admin.register(SearchLog)
class SearchLogAdmin(admin.ModelAdmin):
    """The search log, read only (recording writes it, retention deletes it); its Search
    insights page sums it up for merchandisers."""

    list_display = ["created", "kind", "channel", "query", "result_count", "space"]
    list_filter = ["kind", "channel", "space"]
    search_fields = ["query"]
    show_full_result_count = False  # the log is large: no second count(*) per page
    change_list_template = "admin/search/searchlog/change_list.html"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_urls(self):
        return [
            path(
                "insights/",
                self.admin_site.admin_view(self.insights_view),
                name="search_searchlog_insights",
            )
        ] + super().get_urls()

    def insights_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = InsightsFilterForm(request.GET)
        context = {
            **self.admin_site.each_context(request),
            "title": "Search insights",
            "opts": self.model._meta,
            "form": form,
        }
        if not form.is_valid():
            return TemplateResponse(request, "admin/search/insights.html", context, status=400)
        window, active = form.cleaned_data["window"], space_active_or_none()
        if table := form.cleaned_data["export"]:
            return insights_csv_response(
                table=table,
                window=window,
                rows=insights_export_rows(
                    table=table,
                    window=window,
                    limit=settings.SEARCH_INSIGHTS_EXPORT_ROWS,
                    space=active,
                ),
            )
        rows = settings.SEARCH_INSIGHTS_ROWS
        summary = insights_summary(window=window, limit=rows)
        query = request.GET.copy()
        query.pop("export", None)
        context.update(
            window=window,
            totals=summary.totals,
            top=summary.top,
            zero=insights_zero_result_queries(window=window, limit=rows),
            no_clicks=summary.no_clicks,
            days=summary.days,
            **insights_charts(summary.days),
            active_space=active,
            clusters=insights_zero_result_clusters(window=window, space=active) if active else [],
            export_query=query.urlencode(),
        )
        return TemplateResponse(request, "admin/search/insights.html", context)


def insights_charts(days: list[DayStats]) -> dict[str, str]:
    """CTR and MRR by day as the fine-tune page's line charts, on a 0 to 1 axis."""

    def span(shown):
        return (shown[0].day.isoformat(), shown[-1].day.isoformat()) if shown else None

    clicked = [d for d in days if d.mrr is not None]
    size = {"width": 440, "height": 160, "y_range": (0.0, 1.0)}
    return {
        "ctr_chart": line_chart_svg(
            [d.ctr for d in days], title="click-through rate by day", x_labels=span(days), **size
        ),
        "mrr_chart": line_chart_svg(
            [d.mrr for d in clicked],
            title="MRR of the first click by day",
            colour="#ba2121",
            x_labels=span(clicked),
            **size,
        ),
    }


def insights_csv_response(*, table: str, window: InsightsRange, rows: list[list[str]]):
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    name = f"search-insights-{table}-{window.start}-{window.end}.csv"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    csv.writer(response).writerows(rows)
    return response
