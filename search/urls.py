from django.urls import path

from search import api_ask, api_events, api_photos, api_search, api_suggest, views, views_ask

urlpatterns = [
    path("", views.shop_search, name="shop-search"),
    path("search/photo/", views.shop_photo_search, name="shop-photo-search"),
    path("products/<int:pk>/", views.product_detail, name="product-detail"),
    path("products/<int:pk>/ask/", views_ask.product_ask, name="product-ask"),
    # A result link without JavaScript: records the click, then the product page.
    path("click/<uuid:search_id>/<int:product_id>/", views.shop_result_click, name="shop-click"),
    path("api/search/", api_search.ProductSearchApi.as_view(), name="api-search"),
    path("api/suggest/", api_suggest.SuggestApi.as_view(), name="api-suggest"),
    path("api/search/image/", api_search.ProductImageSearchApi.as_view(), name="api-search-image"),
    path(
        "api/products/<int:product_id>/similar/",
        api_search.ProductSimilarApi.as_view(),
        name="api-product-similar",
    ),
    path("api/match/", api_photos.ImageTextMatchApi.as_view(), name="api-match"),
    path("api/captions/", api_photos.ImageCaptionsApi.as_view(), name="api-captions"),
    path("api/ask/", api_ask.PhotoQuestionApi.as_view(), name="api-ask"),
    path("api/events/", api_events.SearchEventApi.as_view(), name="api-events"),
]
