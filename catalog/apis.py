"""JSON API of the catalog: bulk imports (staff only). Thin views over services and selectors."""

from django.http import StreamingHttpResponse
from django.urls import reverse
from rest_framework import permissions, serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog.importing.readers import ImportFileError
from catalog.importing.selectors import (
    import_job_get,
    import_report_csv,
    import_report_filename,
    import_row_errors,
)
from catalog.importing.services import import_format_from_name, import_job_create
from catalog.models import ImportJob

ERRORS_LISTED = 100


class CanImport(permissions.BasePermission):
    """Active staff allowed to start imports (POST) or to see them (GET)."""

    message = "Only staff members allowed to import products can do this."

    def has_permission(self, request, view):
        user = request.user
        perm = "catalog.view_importjob" if request.method in permissions.SAFE_METHODS else None
        return bool(
            user
            and user.is_active
            and user.is_staff
            and (user.has_perm("catalog.add_importjob") or (perm and user.has_perm(perm)))
        )


def _job(job_id: int) -> ImportJob:
    job = import_job_get(job_id=job_id)
    if job is None:
        raise NotFound(f"there is no import {job_id}")
    return job


class ImportJobDetailApi(APIView):
    permission_classes = [CanImport]

    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        status = serializers.CharField()
        format = serializers.CharField()
        dry_run = serializers.BooleanField()
        source_name = serializers.CharField()
        images_name = serializers.CharField()
        progress = serializers.FloatField()
        rows = serializers.SerializerMethodField()
        images_created = serializers.IntegerField()
        failure = serializers.SerializerMethodField()
        errors = serializers.SerializerMethodField()
        report_url = serializers.SerializerMethodField()
        created = serializers.DateTimeField()
        started = serializers.DateTimeField()
        finished = serializers.DateTimeField()

        def get_rows(self, job):
            return {
                "processed": job.rows_processed,
                "created": job.rows_created,
                "updated": job.rows_updated,
                "unchanged": job.rows_unchanged,
                "failed": job.rows_failed,
            }

        def get_failure(self, job):
            return job.error or None

        def get_errors(self, job):
            errors = import_row_errors(job=job)[:ERRORS_LISTED]
            return [
                {"line": e.line, "sku": e.sku, "field": e.field, "error": e.message} for e in errors
            ]

        def get_report_url(self, job):
            url = reverse("api-import-report", args=[job.pk])
            return self.context["request"].build_absolute_uri(url)

    def get(self, request, job_id: int):
        job = _job(job_id)
        return Response(self.OutputSerializer(job, context={"request": request}).data)


class ImportJobCreateApi(APIView):
    permission_classes = [CanImport]

    class InputSerializer(serializers.Serializer):
        file = serializers.FileField()
        images = serializers.FileField(required=False)
        format = serializers.ChoiceField(choices=ImportJob.Format.values, required=False)
        dry_run = serializers.BooleanField(default=False)

        def validate(self, data):
            data["format"] = data.get("format") or import_format_from_name(data["file"].name)
            if not data["format"]:
                raise serializers.ValidationError(
                    {
                        "format": [
                            f"cannot tell the format of {data['file'].name!r}: give csv, "
                            "tsv or jsonl"
                        ]
                    }
                )
            return data

    def post(self, request):
        params = self.InputSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        try:
            job = import_job_create(
                format=params.validated_data["format"],
                source=params.validated_data["file"],
                images=params.validated_data.get("images"),
                dry_run=params.validated_data["dry_run"],
                requested_by=request.user,
            )
        except ImportFileError as exc:
            raise serializers.ValidationError({exc.field: [str(exc)]}) from None
        job.refresh_from_db()  # without a broker it has already run
        data = ImportJobDetailApi.OutputSerializer(job, context={"request": request}).data
        return Response(data, status=status.HTTP_202_ACCEPTED)


class ImportJobReportApi(APIView):
    """The rows that failed, and why, as a CSV download."""

    permission_classes = [CanImport]

    def get(self, request, job_id: int):
        job = _job(job_id)
        return StreamingHttpResponse(
            import_report_csv(job=job),
            content_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="{import_report_filename(job)}"'
            },
        )
