from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from catalog import apis as catalog_apis
from catalog import views as catalog_views
from embeddings import apis as embedding_apis
from shop_search.health import healthz

urlpatterns = [
    path("", catalog_views.shop_search, name="shop-search"),
    path("search/photo/", catalog_views.shop_photo_search, name="shop-photo-search"),
    path("products/<int:pk>/", catalog_views.product_detail, name="product-detail"),
    path("api/search/", embedding_apis.ProductSearchApi.as_view(), name="api-search"),
    path(
        "api/search/image/",
        embedding_apis.ProductImageSearchApi.as_view(),
        name="api-search-image",
    ),
    path(
        "api/products/<int:product_id>/similar/",
        embedding_apis.ProductSimilarApi.as_view(),
        name="api-product-similar",
    ),
    path("api/match/", embedding_apis.ImageTextMatchApi.as_view(), name="api-match"),
    path("api/captions/", embedding_apis.ImageCaptionsApi.as_view(), name="api-captions"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
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
