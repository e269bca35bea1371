from django.urls import path

from search import apis, views

urlpatterns = [
    path("", views.shop_search, name="shop-search"),
    path("search/photo/", views.shop_photo_search, name="shop-photo-search"),
    path("products/<int:pk>/", views.product_detail, name="product-detail"),
    path("api/search/", apis.ProductSearchApi.as_view(), name="api-search"),
    path("api/suggest/", apis.SuggestApi.as_view(), name="api-suggest"),
    path("api/search/image/", apis.ProductImageSearchApi.as_view(), name="api-search-image"),
    path(
        "api/products/<int:product_id>/similar/",
        apis.ProductSimilarApi.as_view(),
        name="api-product-similar",
    ),
    path("api/match/", apis.ImageTextMatchApi.as_view(), name="api-match"),
    path("api/captions/", apis.ImageCaptionsApi.as_view(), name="api-captions"),
]
