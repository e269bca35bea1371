"""The shop's URLs plus its media files, so the browser test sees the product photos."""

from django.conf import settings
from django.urls import re_path
from django.views.static import serve

from shop_search.urls import urlpatterns as shop_urlpatterns

urlpatterns = [
    *shop_urlpatterns,
    re_path(r"^media/(?P<path>.*)$", serve, {"document_root": settings.MEDIA_ROOT}),
]
