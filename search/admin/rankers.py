"""The learned rankers' admin: each ranker's report (held-out nDCG@10 against fusion and
the live one, feature importance, the queries it helped and hurt most, its interleaving
tally, the shared promotion decision), making one live, and rolling back in one click."""

from django.contrib import admin
from django.utils.html import format_html, format_html_join

from embeddings.admin import promotion_report
from embeddings.charts import bar_chart_svg
from search.interleaving import interleaving_test_tally
from search.models import InterleavingTest, Ranker
from search.ranker import ranker_activate, ranker_rollback

MOVERS = 5  # queries shown that gained, and that lost, most


def _score(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def ranker_report(ranker: Ranker) -> str:
    metrics = ranker.metrics or {}
    ndcg = metrics.get("ndcg@10", {})
    per_query = metrics.get("per_query", [])
    baseline = "live" if ndcg.get("live") is not None else "fusion"
    moved = sorted(per_query, key=lambda q: q["candidate"] - q.get(baseline, q["fusion"]))
    gained = [q for q in reversed(moved) if q["candidate"] > q.get(baseline, q["fusion"])]
    lost = [q for q in moved if q["candidate"] < q.get(baseline, q["fusion"])]

    def movers(rows, title):
        if not rows:
            return format_html("<p>{}: none</p>", title)
        return format_html(
            "<h4>{}</h4><table><thead><tr><th>query</th><th>fusion</th><th>{}</th>"
            "<th>this ranker</th></tr></thead><tbody>{}</tbody></table>",
            title,
            "live ranker",
            format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                (
                    (q["query"], _score(q["fusion"]), _score(q.get("live")), _score(q["candidate"]))
                    for q in rows[:MOVERS]
                ),
            ),
        )

    tests = InterleavingTest.objects.filter(candidate_ranker=ranker).order_by("-created")
    tallies = format_html_join(
        "",
        "<li>{} ({}): {}</li>",
        ((test, test.status, interleaving_test_tally(test)) for test in tests),
    )
    return format_html(
        "<h3>Held-out nDCG@10</h3><table><thead><tr><th>fusion</th><th>live ranker</th>"
        "<th>this ranker</th><th>queries</th></tr></thead><tbody><tr><td>{}</td><td>{}</td>"
        "<td>{}</td><td>{}</td></tr></tbody></table>"
        "<p>Trained on {} queries ({} examples); margin {}.</p><p>{}</p>{}{}{}{}"
        "<h3>Interleaving</h3><ul>{}</ul>",
        _score(ndcg.get("fusion")),
        _score(ndcg.get("live")),
        _score(ndcg.get("candidate")),
        metrics.get("held_out_queries", 0),
        metrics.get("trained_queries", 0),
        metrics.get("trained_examples", 0),
        _score(metrics.get("margin")),
        metrics.get("decision", ""),
        promotion_report(metrics),
        bar_chart_svg(metrics.get("importance", {}), title="feature importance (gain)"),
        movers(gained, "Queries that gained most"),
        movers(lost, "Queries that lost most"),
        tallies or format_html("<li>{}</li>", "no interleaving test"),
    )


@admin.register(Ranker)
class RankerAdmin(admin.ModelAdmin):
    list_display = ["name", "status", "ndcg_fusion", "ndcg_live", "ndcg", "verdict", "created"]
    list_filter = ["status"]
    readonly_fields = ["name", "status", "parent", "created", "activated", "report"]
    exclude = ["model_text", "features", "metrics"]
    actions = ["make_live", "roll_back"]

    def has_add_permission(self, request):
        return False  # rankers come from train_ranker

    def _ndcg(self, obj, key):
        return _score((obj.metrics or {}).get("ndcg@10", {}).get(key))

    @admin.display(description="fusion nDCG@10")
    def ndcg_fusion(self, obj):
        return self._ndcg(obj, "fusion")

    @admin.display(description="live nDCG@10")
    def ndcg_live(self, obj):
        return self._ndcg(obj, "live")

    @admin.display(description="its nDCG@10")
    def ndcg(self, obj):
        return self._ndcg(obj, "candidate")

    @admin.display(description="promotion")
    def verdict(self, obj):
        return (obj.metrics or {}).get("promotion", {}).get("verdict", "-")

    @admin.display(description="Report")
    def report(self, obj):
        return ranker_report(obj)

    @admin.action(description="Make the selected ranker live (bypasses the gates)")
    def make_live(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Choose one ranker to make live.", level="error")
            return
        ranker = ranker_activate(ranker=queryset.get())
        self.message_user(request, f"{ranker} is live.")

    @admin.action(description="Roll back: the ranker live before the live one, or fusion")
    def roll_back(self, request, queryset):
        live = ranker_rollback()
        self.message_user(request, f"Live ranker: {live or 'none (fusion ranks)'}.")
