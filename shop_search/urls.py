from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from catalog import apis as catalog_apis
from shop_search.health import healthz

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
]

if settings.DEBUG:
    urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)
