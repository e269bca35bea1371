"""Product photos served by Django under DEBUG (the demo); nginx serves them in production.

Both serve the same thing and nothing else: files under MEDIA_ROOT/products/ with an image
extension, with that image's content type (and `X-Content-Type-Options: nosniff`, from
SecurityMiddleware here). Whatever else lies in MEDIA_ROOT, such as import uploads of
older versions, is a 404.
"""

import posixpath
import re

from django.conf import settings
from django.http import Http404
from django.urls import re_path
from django.views.static import serve

PHOTO_EXTENSIONS = ("jpg", "jpeg", "png", "gif", "webp")


def product_photo_serve(request, path: str):
    if not settings.DEBUG:
        raise Http404("photos are served by the web server in front (docker/nginx.conf)")
    if not posixpath.normpath(path).startswith("products/"):  # products/../imports/...
        raise Http404("only product photos are served")
    return serve(request, path, document_root=settings.MEDIA_ROOT)


def media_urlpatterns() -> list:
    prefix = re.escape(settings.MEDIA_URL.strip("/"))
    extensions = "|".join(PHOTO_EXTENSIONS)
    return [
        re_path(
            rf"^{prefix}/(?P<path>products/[^?#]+\.(?i:{extensions}))$",
            product_photo_serve,
            name="product-photo",
        )
    ]
