"""The search log's admin, read only, and its Search insights page for merchandisers:
totals, top and zero-result queries, daily charts, clusters and CSV exports."""

import csv

from django import forms
from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.template.response import TemplateResponse
from django.urls import path

from embeddings.charts import line_chart_svg
from embeddings.models import EmbeddingSpace
from embeddings.spaces import space_active_or_none
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
from search.models import SearchLog
from search.templatetags.shopper_text import shopper_text


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

    list_display = ["created", "kind", "channel", "shopper_query", "result_count", "space"]
    list_filter = ["kind", "channel", "space"]
    search_fields = ["query"]
    readonly_fields = ["shopper_query"]
    show_full_result_count = False  # the log is large: no second count(*) per page
    change_list_template = "admin/search/searchlog/change_list.html"

    class Media:
        css = {"all": ["search/shopper-text.css"]}

    @admin.display(description="query", ordering="query")
    def shopper_query(self, log: SearchLog):
        return shopper_text(log.query)

    def get_fields(self, request, obj=None):
        """The query where it stands, shown as `shopper_query` (isolated, wrapped)."""
        fields = [f for f in super().get_fields(request, obj) if f != "shopper_query"]
        return ["shopper_query" if f == "query" else f for f in fields]

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
        # The fields show the range in effect, the default 30 days included.
        context["form"] = InsightsFilterForm(
            initial={
                "start": window.start,
                "end": window.end,
                "space": form.cleaned_data["space"],
            }
        )
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
    response.write("\ufeff")  # BOM: Excel then reads UTF-8 (Chinese queries), not ANSI
    csv.writer(response).writerows(rows)
    return response
