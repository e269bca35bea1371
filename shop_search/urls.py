from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.urls import path

from catalog import apis as catalog_apis
from catalog import views as catalog_views
from embeddings import apis as embedding_apis

urlpatterns = [
    path("", catalog_views.shop_search, name="shop-search"),
    path("products/<int:pk>/", catalog_views.product_detail, name="product-detail"),
    path("api/search/", embedding_apis.ProductSearchApi.as_view(), name="api-search"),
    path("api/captions/", embedding_apis.ImageCaptionsApi.as_view(), name="api-captions"),
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
]

if settings.DEBUG:
    urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)
