"""Admin pages of imports: upload a file, follow its progress, download its report."""

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, StreamingHttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from catalog.importing.readers import ImportFileError
from catalog.importing.selectors import (
    import_jobs_visible,
    import_report_csv,
    import_report_filename,
    import_row_errors,
)
from catalog.importing.services import (
    import_format_from_name,
    import_job_create,
    import_job_requeue,
)
from catalog.models import ImportJob

ERRORS_SHOWN = 100


class ImportUploadForm(forms.Form):
    file = forms.FileField(
        label="Products file",
        help_text="CSV with a header (a Shopify or WooCommerce product export too), TSV of "
        "text<TAB>base64 image, or JSON Lines",
    )
    images = forms.FileField(
        label="Images ZIP", required=False, help_text="the images that the rows name (CSV, JSONL)"
    )
    format = forms.ChoiceField(
        choices=[("", "from the file name"), *ImportJob.Format.choices], required=False
    )
    dry_run = forms.BooleanField(
        label="Dry run: validate every row, change nothing", required=False
    )

    def clean(self):
        data = super().clean()
        if data.get("file") and not data.get("format"):
            data["format"] = import_format_from_name(data["file"].name)
            if not data["format"]:
                self.add_error("format", "Cannot tell the format from the file name: choose one.")
        return data


@admin.register(ImportJob)
class ImportJobAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "format",
        "status",
        "dry_run",
        "percent",
        "rows_processed",
        "rows_created",
        "rows_updated",
        "rows_failed",
        "requested_by",
        "created",
    ]
    list_filter = ["status", "format", "dry_run"]
    search_fields = ["source_name"]
    actions = ["resume"]
    change_list_template = "admin/catalog/importjob/change_list.html"

    @admin.display(description="progress")
    def percent(self, obj):
        return f"{obj.progress:.0%}"

    @admin.action(description="Resume the selected unfinished imports", permissions=["add"])
    def resume(self, request, queryset):
        jobs = [job for job in queryset if job.status != ImportJob.Status.DONE]
        for job in jobs:
            import_job_requeue(job=job)
        self.message_user(request, f"{len(jobs)} imports queued to continue.")

    def has_change_permission(self, request, obj=None):
        return False  # a job is a record; it changes only by running

    def has_view_permission(self, request, obj=None):
        # Whoever may start imports follows their own (get_queryset hides the others).
        return super().has_view_permission(request, obj) or self.has_add_permission(request)

    def get_queryset(self, request):
        return import_jobs_visible(user=request.user)

    def get_urls(self):
        return [
            path(
                "<path:object_id>/report/",
                self.admin_site.admin_view(self.report_view),
                name="catalog_importjob_report",
            ),
        ] + super().get_urls()

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = ImportUploadForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            try:
                job = import_job_create(
                    format=form.cleaned_data["format"],
                    source=form.cleaned_data["file"],
                    images=form.cleaned_data["images"],
                    dry_run=form.cleaned_data["dry_run"],
                    requested_by=request.user,
                )
            except ImportFileError as exc:
                form.add_error(exc.field, str(exc))
            else:
                messages.success(request, f"Import {job.pk} of {job.source_name} started.")
                return redirect("admin:catalog_importjob_change", job.pk)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Import products",
            "form": form,
            "max_image_mb": settings.MAX_UPLOAD_IMAGE_BYTES / 1e6,
            "max_pixels": settings.MAX_IMAGE_PIXELS,
        }
        return TemplateResponse(request, "admin/catalog/importjob/upload.html", context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        job = self.get_object(request, unquote(object_id))
        if job is None:
            return self._get_obj_does_not_exist_redirect(request, self.model._meta, object_id)
        if not self.has_view_permission(request, job):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": str(job),
            "job": job,
            "running": job.status in (ImportJob.Status.PENDING, ImportJob.Status.RUNNING),
            "errors": import_row_errors(job=job)[:ERRORS_SHOWN],
            "status_url": reverse("api-import-detail", args=[job.pk]),
            "report_url": reverse("admin:catalog_importjob_report", args=[job.pk]),
        }
        return TemplateResponse(request, "admin/catalog/importjob/detail.html", context)

    def report_view(self, request, object_id):
        job = self.get_object(request, unquote(object_id))
        if job is None:
            raise Http404(f"there is no import {object_id}")
        if not self.has_view_permission(request, job):
            raise PermissionDenied
        return StreamingHttpResponse(
            import_report_csv(job=job),
            content_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="{import_report_filename(job)}"'
            },
        )
