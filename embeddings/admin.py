from django.conf import settings
from django.contrib import admin, messages
from django.db.models import Exists, OuterRef, Subquery
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from catalog.admin import ProductImageAdmin
from catalog.models import ProductImage
from embeddings.charts import line_chart_svg, metrics_table
from embeddings.finetuning import FinetuneOptions, training_epochs_text
from embeddings.models import CaptionEmbedding, EmbeddingSpace, FinetuneRun, ImageEmbedding
from embeddings.services import FinetuneRunInProgress, finetune_run_start, space_activate_start
from embeddings.spaces import space_active_or_none, space_delete


def training_report(metrics: dict) -> str:
    """Before/after Recall@K table and the loss and validation-recall curves of a training."""
    if not metrics.get("after"):
        evaluation = metrics.get("evaluation")
        return metrics_table({"evaluation": evaluation}) if evaluation else "-"
    rows = {
        f"active before ({metrics.get('active_space', '?')})": metrics.get("active_before", {}),
        "start of training": metrics.get("before", {}),
        "after training": metrics["after"],
    }
    if metrics.get("evaluation"):
        rows["latest evaluation"] = metrics["evaluation"]
    recall = [e.get("val_mean_recall") for e in metrics.get("epochs", [])]
    return format_html(
        "{}<p>{}</p>{}<p>{}</p>{}{}{}{}",
        metrics_table(rows),
        metrics.get("decision", ""),
        promotion_report(metrics),
        training_summary(metrics.get("training", {})),
        gates_report(metrics),
        calibration_report(metrics.get("calibration")),
        line_chart_svg(metrics.get("losses", []), title="training loss by step"),
        line_chart_svg(recall, title="validation mean recall by epoch", colour="#ba2121"),
    )


def promotion_report(metrics: dict) -> str:
    """The shared promotion decision (embeddings.promotion) as one line: the fine-tune report
    and the ranker report show the same."""
    promotion = metrics.get("promotion")
    if not promotion:
        return ""
    return format_html(
        "<p><strong>Promotion: {}</strong> (decided by {}): {}</p>",
        promotion.get("verdict", "?"),
        promotion.get("decided_by", "?"),
        promotion.get("reason", ""),
    )


def gates_report(metrics: dict) -> str:
    """Each promotion gate's say (the catalog's recall, then those other apps registered:
    the shoppers' query nDCG) and the shoppers' pairs trained on, as HTML."""
    gates = metrics.get("gates")
    if gates is None:
        return ""
    gain = metrics["after"].get("mean_recall", 0.0) - metrics.get("active_before", {}).get(
        "mean_recall", 0.0
    )
    said = {True: "passed", False: "failed", None: "nothing to measure"}
    # Runs before the gate's own say was stored: the margin is the setting's.
    catalog = metrics.get("catalog_gate") or {
        "passed": gain >= settings.FINETUNE_PROMOTION_MARGIN,
        "margin": settings.FINETUNE_PROMOTION_MARGIN,
    }
    rows = [
        (
            "catalog recall",
            said[catalog["passed"]],
            f"validation mean recall {gain:+.3f} over the active space "
            f"(needs {catalog['margin']:+.3f})",
        )
    ]
    rows += [(g["gate"], said[g["passed"]], g["detail"]) for g in gates]
    extra = format_html_join(
        "",
        "<li>{} training pairs from {} ({} queries trained on, {} held out)</li>",
        (
            (
                e.get("train_pairs"),
                name,
                e.get("trained_queries", "?"),
                e.get("held_out_queries", "?"),
            )
            for name, e in metrics.get("extra_pairs", {}).items()
        ),
    )
    return format_html(
        "<h3>Promotion gates</h3><table class='gates'><thead><tr><th>gate</th><th>result</th>"
        "<th>measured</th></tr></thead><tbody>{}</tbody></table><p>Decided by: {}</p><ul>{}</ul>"
        "{}",
        format_html_join("", "<tr><th>{}</th><td>{}</td><td>{}</td></tr>", rows),
        metrics.get("decided_by", "?"),
        extra,
        format_html_join(
            "",
            "{}",
            (
                (discarded_report(name, e["discarded"]),)
                for name, e in metrics.get("extra_pairs", {}).items()
                if e.get("discarded")
            ),
        ),
    )


def discarded_report(source: str, discarded: list[dict]) -> str:
    """What a pair source left out of its evidence and why (the source says: for the
    shoppers' queries, robot sessions, shopper filters, clients over their cap...)."""

    def count(value) -> str:
        return "-" if value is None else f"{value:,}"

    return format_html(
        "<h4>Left out of {}</h4><table class='discarded'><thead><tr><th>why</th>"
        "<th>sessions</th><th>searches</th><th>events</th><th>votes</th></tr></thead>"
        "<tbody>{}</tbody></table>",
        source,
        format_html_join(
            "",
            "<tr><th>{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    row.get("reason", "?"),
                    count(row.get("sessions")),
                    count(row.get("searches")),
                    count(row.get("events")),
                    count(row.get("votes")),
                )
                for row in discarded
            ),
        ),
    )


def training_summary(training: dict) -> str:
    """How it trained: pairs, epochs, speed, device and how many processes (world size)."""
    if not training:
        return ""
    return (
        f"{training.get('train_pairs', '?')} training pairs, "
        f"{training_epochs_text(training)}, "
        f"{training.get('pairs_per_second', 0):.0f} pairs/s on {training.get('device', '?')}, "
        f"world size {training.get('world_size', 1)}"
    )


def calibration_report(calibration: dict | None) -> str:
    """The two similarity floors and what they were calibrated on, as an HTML table."""
    if not calibration:
        return ""
    header = format_html_join("", "<th>{}</th>", ((q,) for q in ("p2", "p50", "p98", "max")))
    rows = format_html_join(
        "",
        "<tr><th>{}</th>{}</tr>",
        (
            (
                label,
                format_html_join(
                    "",
                    "<td>{}</td>",
                    ((f"{calibration[key].get(q, 0):.3f}",) for q in ("p2", "p50", "p98", "max")),
                ),
            )
            for label, key in (
                ("short real queries to their own photos", "real_similarity"),
                ("random letter strings to any photo", "gibberish_similarity"),
                ("random letter strings: best photo each", "gibberish_best_per_query"),
            )
        ),
    )
    return format_html(
        "<h3>Similarity floors</h3><table class='calibration'><thead><tr><th>similarity of</th>"
        "{}</tr></thead><tbody>{}</tbody></table>"
        "<p>Queries with catalog words: floor <strong>{}</strong> ({} of {} short real "
        "queries above it; a random letter string would reach {} photos there, on average). "
        "Queries with no catalog word: floor <strong>{}</strong> ({} of real queries above it; "
        "a random string reaches {} of the catalog's {} photos). Calibrated on {} validation "
        "photos and {} random strings.</p>",
        header,
        rows,
        f"{calibration['similarity_floor']:.3f}",
        f"{calibration['real_queries_above_floor']:.0%}",
        calibration["real_queries"],
        _count(calibration["gibberish_photos_per_query_at_floor"]),
        f"{calibration['unknown_words_floor']:.3f}",
        f"{calibration['real_queries_above_unknown_words_floor']:.0%}",
        _count(calibration["gibberish_photos_per_query_at_unknown_words_floor"]),
        calibration["catalog_images"],
        calibration["validation_images"],
        calibration["gibberish_queries"],
    )


def _count(value) -> str:
    """A count that may be a mean over queries (98.44): a whole number of photos, "< 1"
    rather than a misleading 0."""
    if value is None:
        return "?"
    return "< 1" if 0 < value < 0.5 else f"{value:,.0f}"


def options_report(options: dict) -> str:
    """A run's options as a table of those set, each other one at its default."""
    defaults = FinetuneOptions().as_dict()
    chosen = [
        (name.replace("_", " "), value)
        for name, value in options.items()
        if defaults.get(name, object()) != value
    ]
    if not chosen:
        return "all defaults"
    return format_html(
        "<table class='options'><tbody>{}</tbody></table><p>Every other option at its default.</p>",
        format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", chosen),
    )


@admin.register(EmbeddingSpace)
class EmbeddingSpaceAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "architecture",
        "source",
        "dim",
        "status",
        "mean_recall",
        "created_on",
    ]
    list_filter = ["status", "source"]
    # The similarity floor is the one setting an operator tunes by hand.
    readonly_fields = [
        f.name
        for f in EmbeddingSpace._meta.fields
        if f.name not in ("metrics", "similarity_floor", "unknown_words_floor")
    ] + ["report"]
    exclude = ["metrics"]
    change_list_template = "admin/embeddings/embeddingspace/change_list.html"
    change_form_template = "admin/embeddings/embeddingspace/change_form.html"

    def has_add_permission(self, request):
        # Spaces come from settings, training, or reindexing, never from a hand-made form.
        return False

    def has_delete_permission(self, request, obj=None):
        # The live space, or one being switched to, is what searches read.
        in_use = obj is not None and obj.status in ("active", "filling")
        return not in_use and super().has_delete_permission(request, obj)

    def get_deleted_objects(self, objs, request):
        # Counted, not listed: the default lists every vector (millions) on the page.
        summary = [
            f"{space}: {ImageEmbedding.objects.filter(space=space).count()} image vectors and "
            f"{CaptionEmbedding.objects.filter(space=space).count()} caption vectors "
            "(its partitions are dropped)"
            for space in objs
        ]
        perms_needed = {
            "embedding space" for space in objs if not self.has_delete_permission(request, space)
        }
        return summary, {"embedding spaces": len(summary)}, perms_needed, []

    def delete_model(self, request, obj):
        space_delete(space=obj)

    def delete_queryset(self, request, queryset):
        for space in queryset:
            space_delete(space=space)

    # Short headers and cells: beside the filters, seven columns fit a 1280 px screen.
    @admin.display(description="dim", ordering="embed_dim")
    def dim(self, obj):
        return obj.embed_dim

    @admin.display(description="created", ordering="created")
    def created_on(self, obj):
        return timezone.localtime(obj.created).strftime("%Y-%m-%d %H:%M")

    @admin.display(description="recall")
    def mean_recall(self, obj):
        """Validation mean recall (the mean of the six Recall@K): short, the list has seven
        columns."""
        metrics = obj.metrics.get("evaluation") or obj.metrics.get("after") or {}
        return f"{metrics['mean_recall']:.3f}" if "mean_recall" in metrics else "-"

    @admin.display(description="Quality report")
    def report(self, obj):
        return training_report(obj.metrics)

    def get_urls(self):
        return [
            path(
                "finetune/",
                self.admin_site.admin_view(self.finetune_view),
                name="embeddings_embeddingspace_finetune",
            ),
            path(
                "<int:pk>/activate/",
                self.admin_site.admin_view(self.activate_view),
                name="embeddings_embeddingspace_activate",
            ),
        ] + super().get_urls()

    def finetune_view(self, request):
        if request.method != "POST" or not request.user.has_perm("embeddings.add_finetunerun"):
            messages.error(request, "Fine-tuning needs a POST by a user allowed to start runs.")
            return HttpResponseRedirect(reverse("admin:embeddings_embeddingspace_changelist"))
        try:
            run = finetune_run_start(
                options=FinetuneOptions(**settings.FINETUNE_ADMIN_OPTIONS),
                source=space_active_or_none(),
                requested_by=request.user,
            )
        except FinetuneRunInProgress as exc:
            messages.error(request, str(exc))
            return HttpResponseRedirect(reverse("admin:embeddings_finetunerun_changelist"))
        messages.success(request, f"Fine-tuning started ({run}).")
        return HttpResponseRedirect(reverse("admin:embeddings_finetunerun_change", args=[run.pk]))

    def activate_view(self, request, pk):
        space = get_object_or_404(EmbeddingSpace, pk=pk)
        if request.method == "POST" and request.user.has_perm("embeddings.change_embeddingspace"):
            space_activate_start(space=space)
            messages.success(request, f"Activating {space} (filled first, then switched).")
        return HttpResponseRedirect(reverse("admin:embeddings_embeddingspace_change", args=[pk]))


@admin.register(FinetuneRun)
class FinetuneRunAdmin(admin.ModelAdmin):
    list_display = ["__str__", "status", "phase", "space", "requested_by", "created"]
    list_filter = ["status"]
    readonly_fields = [
        "status",
        "live_progress",
        "outcome",
        "space",
        "source",
        "run_options",
        "error",
        "requested_by",
        "created",
        "updated",
    ]
    exclude = ["progress", "result", "options"]

    def has_add_permission(self, request):
        return False  # started by the button on the spaces page, or finetune_clip

    def has_change_permission(self, request, obj=None):
        return False  # a record of what happened: shown read-only, no Save buttons

    @admin.display(description="Options")
    def run_options(self, obj):
        return options_report(obj.options or {})

    @admin.display(description="phase")
    def phase(self, obj):
        return obj.progress.get("phase", "-")

    @admin.display(description="Progress")
    def live_progress(self, obj):
        p = obj.progress
        refresh = (
            format_html('<meta http-equiv="refresh" content="5">')
            if obj.status in (FinetuneRun.Status.QUEUED, FinetuneRun.Status.RUNNING)
            else ""
        )
        # The share done, not "step n of m": the horizon of a time-budgeted run moves.
        line = format_html(
            "{}<strong>{}</strong> · {}% trained · step {} · epoch {} · loss {} · {} s · "
            "world size {}",
            refresh,
            p.get("phase", "queued"),
            round(100 * p.get("fraction", 0.0)),
            p.get("step", 0),
            p.get("epoch", "-"),
            f"{p['loss']:.3f}" if isinstance(p.get("loss"), float) else "-",
            round(p.get("elapsed", 0)),
            p.get("world_size", 1),
        )
        if not refresh:  # finished: the result below has the final charts
            return line
        recall = [e.get("val_mean_recall") for e in p.get("epochs", [])]
        losses = [e.get("train_loss") for e in p.get("epochs", [])]
        return format_html(
            "{}<br>{}{}",
            line,
            line_chart_svg(losses, title="training loss by epoch"),
            line_chart_svg(recall, title="validation mean recall by epoch", colour="#ba2121"),
        )

    @admin.display(description="Result")
    def outcome(self, obj):
        return training_report(obj.space.metrics) if obj.space else "-"


admin.site.unregister(ProductImage)


@admin.register(ProductImage)
class ProductImageEmbeddingAdmin(ProductImageAdmin):
    """The catalog's image admin, with each image's embedding status in the active space."""

    list_display = [*ProductImageAdmin.list_display, "embedding_status"]
    readonly_fields = [*ProductImageAdmin.readonly_fields, "embedding_status"]
    fields = [*ProductImageAdmin.fields, "embedding_status"]

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        space = space_active_or_none()
        if space is None:
            return queryset
        # Status comes from the active space's embedding rows, not a stored flag.
        rows = ImageEmbedding.objects.filter(image=OuterRef("pk"), space=space)
        return queryset.annotate(
            has_embedding=Exists(rows.filter(vector__isnull=False)),
            embedding_error=Subquery(rows.values("error")[:1]),
        )

    @admin.display(description="Embedding")
    def embedding_status(self, obj):
        if getattr(obj, "has_embedding", False):
            return "embedded"
        if getattr(obj, "embedding_error", None):
            return format_html(
                '<span title="{}">failed: {}</span>', obj.embedding_error, obj.embedding_error[:80]
            )
        return "pending"
