from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from catalog import apis as catalog_apis
from shop_search.health import healthz
from shop_search.media import media_urlpatterns

urlpatterns = [
    path("", include("search.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves Swagger UI's start-up script as a file (?script): no inline script,
    # which the Content-Security-Policy (settings) forbids.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/imports/", catalog_apis.ImportJobCreateApi.as_view(), name="api-imports"),
    path(
        "api/imports/<int:job_id>/",
        catalog_apis.ImportJobDetailApi.as_view(),
        name="api-import-detail",
    ),
    path(
        "api/imports/<int:job_id>/report/",
        catalog_apis.ImportJobReportApi.as_view(),
        name="api-import-report",
    ),
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    # Under DEBUG only, and only product photos: never import files or anything else.
    *media_urlpatterns(),
]

# Django's own 400s (before DRF reads a request) in the API's JSON shape on /api/ paths.
handler400 = "shop_search.api.bad_request"
