"""JSON API of the catalog: bulk imports (staff only). Thin views over services and selectors."""

from django.http import StreamingHttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
)
from rest_framework import permissions, serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.negotiation import DefaultContentNegotiation
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
from shop_search.api import ErrorSerializer

ERRORS_LISTED = 100
FORBIDDEN = OpenApiResponse(
    ErrorSerializer, description="not signed in as active staff allowed to import products"
)
NOT_FOUND = OpenApiResponse(
    ErrorSerializer,
    description="there is no import with this id that you may see (with only the permission "
    "to add imports, you see your own)",
)


class CanImport(permissions.BasePermission):
    """Active staff allowed to start imports (POST) or to see them (GET).

    Which jobs they see is `import_jobs_visible`'s: with only the add permission, their own.
    """

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


def _job(job_id: int, user) -> ImportJob:
    job = import_job_get(job_id=job_id, user=user)
    if job is None:
        raise NotFound(f"there is no import {job_id}")
    return job


class ImportRowsSerializer(serializers.Serializer):
    processed = serializers.IntegerField(source="rows_processed", help_text="rows read so far")
    created = serializers.IntegerField(source="rows_created")
    updated = serializers.IntegerField(source="rows_updated")
    unchanged = serializers.IntegerField(source="rows_unchanged")
    failed = serializers.IntegerField(source="rows_failed", help_text="rows not imported")


class ImportRowErrorSerializer(serializers.Serializer):
    line = serializers.IntegerField(help_text="line of the data file (a header is line 1)")
    sku = serializers.CharField(help_text="empty when the row has none")
    field = serializers.CharField(help_text="the column at fault; empty for the whole row")
    error = serializers.CharField(source="message")


class ImportJobDetailApi(APIView):
    permission_classes = [CanImport]

    @extend_schema_serializer(component_name="ImportJob")
    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        status = serializers.ChoiceField(choices=ImportJob.Status.choices)
        format = serializers.ChoiceField(choices=ImportJob.Format.choices)
        dry_run = serializers.BooleanField(help_text="validated only, nothing written")
        source_name = serializers.CharField()
        images_name = serializers.CharField(help_text="empty when no images file was given")
        progress = serializers.FloatField(help_text="fraction of the data file done, 0 to 1")
        rows = ImportRowsSerializer(source="*")
        images_created = serializers.IntegerField()
        failure = serializers.SerializerMethodField(help_text="why the whole import stopped")
        errors = serializers.SerializerMethodField(
            help_text=f"the first {ERRORS_LISTED} rows not imported; all are in the report"
        )
        report_url = serializers.SerializerMethodField(
            help_text="the rows not imported, as a CSV download"
        )
        created = serializers.DateTimeField()
        started = serializers.DateTimeField(allow_null=True)
        finished = serializers.DateTimeField(allow_null=True)

        def get_failure(self, job) -> str | None:
            return job.error or None

        @extend_schema_field(ImportRowErrorSerializer(many=True))
        def get_errors(self, job):
            errors = import_row_errors(job=job)[:ERRORS_LISTED]
            return ImportRowErrorSerializer(errors, many=True).data

        @extend_schema_field(OpenApiTypes.URI)
        def get_report_url(self, job):
            url = reverse("api-import-report", args=[job.pk])
            return self.context["request"].build_absolute_uri(url)

    @extend_schema(
        operation_id="import_get",
        summary="Follow an import",
        description="Its status, progress, row counts and the first rows that failed; poll "
        "it until the status is done or failed.",
        responses={
            200: OpenApiResponse(OutputSerializer, description="the import"),
            403: FORBIDDEN,
            404: NOT_FOUND,
        },
    )
    def get(self, request, job_id: int):
        job = _job(job_id, request.user)
        return Response(self.OutputSerializer(job, context={"request": request}).data)


class ImportJobCreateApi(APIView):
    permission_classes = [CanImport]

    @extend_schema_serializer(component_name="ImportJobCreate")
    class InputSerializer(serializers.Serializer):
        file = serializers.FileField(help_text="the products: a CSV, TSV or JSON Lines file")
        images = serializers.FileField(
            required=False, help_text="a ZIP of the images a CSV or JSON Lines file names"
        )
        format = serializers.ChoiceField(
            choices=ImportJob.Format.choices,
            required=False,
            help_text="when not given, told by the file's extension",
        )
        dry_run = serializers.BooleanField(
            default=False, help_text="validate and report only, write nothing"
        )

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

    @extend_schema(
        operation_id="import_create",
        summary="Import products from a file",
        description="Staff only. Creates or updates products by SKU from the file, with the "
        "images of the ZIP; the import runs in the background, so follow it at its detail URL.",
        request={"multipart/form-data": InputSerializer},
        responses={
            202: OpenApiResponse(
                ImportJobDetailApi.OutputSerializer,
                description="the import, queued (already run when there is no task broker)",
            ),
            400: OpenApiResponse(
                ErrorSerializer, description="no file, an unknown format or an unreadable file"
            ),
            403: FORBIDDEN,
        },
    )
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


class CsvOrJsonErrorNegotiation(DefaultContentNegotiation):
    """Any Accept header is served: the report streams as CSV, its errors render as JSON.

    Without it, a client asking for text/csv (as the schema says) would get a 406.
    """

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class ImportJobReportApi(APIView):
    """The rows that failed, and why, as a CSV download."""

    permission_classes = [CanImport]
    content_negotiation_class = CsvOrJsonErrorNegotiation

    @extend_schema(
        operation_id="import_report",
        summary="Download the rows an import did not take",
        description="A CSV file (UTF-8 with a BOM) of the columns line, sku, field, error: "
        "one line per problem, in the order of the data file.",
        responses={
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="the report"),
            403: FORBIDDEN,
            404: NOT_FOUND,
        },
    )
    def get(self, request, job_id: int):
        job = _job(job_id, request.user)
        return StreamingHttpResponse(
            import_report_csv(job=job),
            content_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="{import_report_filename(job)}"'
            },
        )
