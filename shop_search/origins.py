"""Where a browser says a request came from: a page of this site, or another site's."""

from urllib.parse import urlsplit


def own_origin(request) -> str:
    """This site's origin as the request reached it (scheme as the proxies tell it)."""
    return f"{request.scheme}://{request.get_host()}".lower()


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}".lower()


def request_same_origin(request) -> bool | None:
    """True when the browser says the request comes from a page of this site, False when it
    names another site (or hides it: `Origin: null`), None when nothing says (a script, an
    API client, a browser that sent none of the headers).

    Browsers write `Sec-Fetch-Site` themselves, and no page can change it; browsers without
    it are asked `Origin` (every POST has it), then `Referer`."""
    site = request.headers.get("Sec-Fetch-Site")
    if site:
        return site == "same-origin"
    origin = request.headers.get("Origin")
    if origin is not None:
        return origin.lower() == own_origin(request)
    referer = request.headers.get("Referer")
    if referer:
        return _origin_of(referer) == own_origin(request)
    return None
