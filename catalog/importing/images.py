"""Where an import's images come from (a ZIP, base64, an http(s) URL) and how they are checked.

Everything here distrusts its input: archive entry names (zip slip), expanded sizes and
compression ratios (zip bombs), pixel counts (decompression bombs), and URLs (private
addresses, slow or oversized responses, non-image content).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import ipaddress
import posixpath
import socket
import ssl
import threading
import time
import zipfile
import zlib
from dataclasses import dataclass
from typing import IO
from urllib.parse import urljoin, urlsplit

from django.conf import settings
from django.core.files.base import ContentFile
from PIL import Image

from catalog.images import IMAGE_FORMATS, ImageDecodeError, decode_image
from catalog.importing.readers import ImportFileError, file_size
from catalog.services import IMAGE_EXTENSIONS, image_file_store

# The ratio limit applies to entries big enough to matter: tiny files compress oddly.
ZIP_RATIO_MIN_BYTES = 1024 * 1024
MAX_REDIRECTS = 3


class ImageRefError(ValueError):
    """An image of a row that cannot be used; the message says why."""


@dataclass(frozen=True)
class CheckedImage:
    sha256: str
    width: int
    height: int
    extension: str
    name: str = ""  # storage name once stored; empty in a dry run


def image_check(data: bytes) -> CheckedImage:
    """Size, format, pixel count and full decode of an image, or ImageRefError saying why."""
    limit = settings.MAX_UPLOAD_IMAGE_BYTES
    if len(data) > limit:
        raise ImageRefError(f"{file_size(len(data))}, over the limit of {file_size(limit)}")
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
            image_format, (width, height) = image.format, image.size
    except Image.DecompressionBombError:
        # Pillow's own guard fires from the header, far beyond our limit.
        raise ImageRefError(
            f"over the limit of {settings.MAX_IMAGE_PIXELS:,} pixels (decompression bomb)"
        ) from None
    except (OSError, Image.UnidentifiedImageError):
        raise ImageRefError("not a JPEG, PNG, WebP or GIF image") from None
    try:
        decode_image(
            data,
            max_pixels=settings.MAX_IMAGE_PIXELS,
            max_aspect_ratio=settings.MAX_IMAGE_ASPECT_RATIO,
            draft_size=512,
        )
    except (ImageDecodeError, Image.DecompressionBombError) as exc:
        raise ImageRefError(str(exc)) from None
    return CheckedImage(
        sha256=hashlib.sha256(data).hexdigest(),
        width=width,
        height=height,
        extension=IMAGE_EXTENSIONS[image_format],
    )


def image_checked_store(data: bytes, *, store: bool) -> CheckedImage:
    """Check an image and, unless it is a dry run, store it once under its sha256."""
    checked = image_check(data)
    if not store:
        return checked
    name = image_file_store(
        content=ContentFile(data), sha256=checked.sha256, extension=checked.extension
    )
    return CheckedImage(**{**checked.__dict__, "name": name})


# --- ZIP ------------------------------------------------------------------------------------


def _unsafe_entry_name(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or ":" in parts[0] or ".." in parts


class ImageArchive:
    """A ZIP of images, checked as a whole before any row uses it.

    Refused outright: entries with absolute paths or `..` (zip slip), too many entries,
    an expanded size or a compression ratio over the limits (zip bombs). Entries are only
    ever read into memory, capped at the image size limit, never extracted to disk.
    """

    def __init__(self, file: IO[bytes]):
        try:
            self.zip = zipfile.ZipFile(file)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError):
            raise ImportFileError("the images file is not a ZIP archive", field="images") from None
        infos = self.zip.infolist()
        if len(infos) > settings.IMPORT_ZIP_MAX_ENTRIES:
            raise ImportFileError(
                f"the ZIP has {len(infos):,} entries, over the limit of "
                f"{settings.IMPORT_ZIP_MAX_ENTRIES:,}",
                field="images",
            )
        expanded = compressed = 0
        self.by_basename: dict[str, str | None] = {}
        for info in infos:
            if _unsafe_entry_name(info.filename):
                raise ImportFileError(
                    f"the ZIP entry {info.filename!r} has an absolute path or '..' "
                    "(zip slip): archive refused",
                    field="images",
                )
            if info.is_dir():
                continue
            expanded += info.file_size
            compressed += info.compress_size
            if info.file_size > ZIP_RATIO_MIN_BYTES and info.file_size > (
                settings.IMPORT_ZIP_MAX_RATIO * max(info.compress_size, 1)
            ):
                raise ImportFileError(
                    f"the ZIP entry {info.filename!r} expands {file_size(info.compress_size)} "
                    f"to {file_size(info.file_size)}, over the compression ratio limit of "
                    f"{settings.IMPORT_ZIP_MAX_RATIO}:1 (zip bomb): archive refused",
                    field="images",
                )
            base = posixpath.basename(info.filename)
            # A name used by two entries in different folders cannot be found by basename.
            self.by_basename[base] = None if base in self.by_basename else info.filename
        if expanded > settings.IMPORT_ZIP_MAX_BYTES:
            raise ImportFileError(
                f"the ZIP expands to {file_size(expanded)}, over the limit of "
                f"{file_size(settings.IMPORT_ZIP_MAX_BYTES)}: archive refused",
                field="images",
            )
        if compressed > ZIP_RATIO_MIN_BYTES and expanded > (
            settings.IMPORT_ZIP_MAX_RATIO * compressed
        ):
            raise ImportFileError(
                f"the ZIP's compression ratio is over {settings.IMPORT_ZIP_MAX_RATIO}:1 "
                "(zip bomb): archive refused",
                field="images",
            )

    def read(self, name: str) -> bytes:
        """The bytes of the entry `name` (its path in the ZIP, or a unique file name)."""
        if _unsafe_entry_name(name):
            raise ImageRefError("not a path inside the ZIP (it is absolute or has '..')")
        name = name.removeprefix("./")
        try:
            info = self.zip.getinfo(name)
        except KeyError:
            found = self.by_basename.get(posixpath.basename(name), "")
            if not found:
                why = "in several folders of" if found is None else "not in"
                raise ImageRefError(f"{why} the ZIP") from None
            info = self.zip.getinfo(found)
        limit = settings.MAX_UPLOAD_IMAGE_BYTES
        if info.file_size > limit:
            raise ImageRefError(
                f"{file_size(info.file_size)}, over the limit of {file_size(limit)}"
            )
        try:
            with self.zip.open(info) as entry:
                data = entry.read(limit + 1)  # never trust the declared size alone
        except RuntimeError as exc:  # encrypted
            raise ImageRefError(f"cannot be read from the ZIP: {exc}") from None
        except (zipfile.BadZipFile, zlib.error, NotImplementedError, OSError, EOFError) as exc:
            raise ImageRefError(f"damaged in the ZIP: {exc}") from None
        if len(data) > limit:
            raise ImageRefError(f"over the limit of {file_size(limit)}")
        return data

    def close(self) -> None:
        self.zip.close()


# --- http(s) URLs ----------------------------------------------------------------------------


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to the address that was checked, not to a second DNS answer (rebinding),
    and shuts its socket at the download's deadline, whatever it is waiting for.

    Socket timeouts bound each read only: a server sending its headers a byte a second
    would hold a download for ever, and http.client reads headers out of our reach.
    """

    def __init__(self, host, port, *, address, deadline):
        super().__init__(host, port, timeout=max(deadline - time.monotonic(), 0.001))
        self.address, self.deadline = address, deadline
        self.expired = False
        self._watchdog: threading.Timer | None = None
        self._lock = threading.Lock()

    def connect(self):
        # One operation, bounded by the timeout (the time left) on its own.
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._wrap(sock)
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            self._expire()
            raise TimeoutError
        self._watchdog = threading.Timer(remaining, self._expire)
        self._watchdog.daemon = True
        self._watchdog.start()
        self._handshake()

    def _wrap(self, sock: socket.socket) -> socket.socket:
        return sock

    def _handshake(self) -> None:
        pass

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            if self.sock is not None:
                # The plain socket's shutdown (not TLS's): a blocked read returns at once.
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(self.sock, socket.SHUT_RDWR)

    def close(self):
        with self._lock:
            if self._watchdog is not None:
                self._watchdog.cancel()
            super().close()


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    default_port = http.client.HTTPS_PORT

    def __init__(self, host, port, *, address, deadline):
        super().__init__(host, port, address=address, deadline=deadline)
        self.tls = ssl.create_default_context()

    def _wrap(self, sock: socket.socket) -> socket.socket:
        # The handshake waits for the watchdog to be armed: it is I/O a server can drip.
        return self.tls.wrap_socket(sock, server_hostname=self.host, do_handshake_on_connect=False)

    def _handshake(self) -> None:
        self.sock.do_handshake()


# IPv6 addresses that reach an IPv4 address written inside them: NAT64 (64:ff9b::/96),
# 6to4 (2002::/16), IPv4-mapped and -compatible. Python calls most of them global, whatever
# the IPv4 address is (64:ff9b::7f00:1 is 127.0.0.1 through a NAT64 gateway).
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
# Local-use NAT64 (RFC 8215) carries private IPv4 networks by definition.
_LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")


def _embedded_ipv4(address: ipaddress.IPv4Address | ipaddress.IPv6Address):
    if address.version != 6:
        return None
    if address.ipv4_mapped or address.sixtofour:
        return address.ipv4_mapped or address.sixtofour
    if address in _NAT64 or address in _IPV4_COMPATIBLE:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if address.version == 6 and address in _LOCAL_NAT64:
        return False
    return all(
        candidate.is_global and not candidate.is_multicast
        for candidate in (address, _embedded_ipv4(address))
        if candidate is not None
    )


def _checked_address(host: str, port: int) -> str:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise ImageRefError(f"host {host} not found") from None
    for *_, sockaddr in infos:
        if settings.IMPORT_URL_ALLOW_PRIVATE or _public(ipaddress.ip_address(sockaddr[0])):
            return sockaddr[0]
    # Never the address itself: the error report would map the shop's internal network.
    raise ImageRefError("refused: the address is private")


def image_download(url: str) -> bytes:
    """GET an image URL within the timeout and size limit, requiring an image/* response.

    The timeout covers the whole download (every redirect, the connection, the TLS
    handshake, the response headers and the body).
    """
    limit = settings.MAX_UPLOAD_IMAGE_BYTES
    deadline = time.monotonic() + settings.IMPORT_URL_TIMEOUT
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ImageRefError("only http(s) URLs are downloaded")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise ImageRefError("invalid port in the URL") from None
        connection_class = (
            _PinnedHTTPSConnection if parts.scheme == "https" else _PinnedHTTPConnection
        )
        connection = connection_class(
            parts.hostname,
            port,
            address=_checked_address(parts.hostname, port),
            deadline=deadline,
        )
        try:
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            connection.request(
                "GET", target, headers={"Accept": "image/*", "User-Agent": "shop-search-import"}
            )
            response = connection.getresponse()
            if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
                url = urljoin(url, response.getheader("Location"))
                continue
            if response.status != 200:
                raise ImageRefError(f"download failed: HTTP {response.status} {response.reason}")
            content_type = (response.getheader("Content-Type") or "").split(";")[0].strip()
            if not content_type.lower().startswith("image/"):
                raise ImageRefError(f"content type {content_type or 'missing'}, not an image")
            length = response.getheader("Content-Length") or ""
            if length.isdigit() and int(length) > limit:
                raise ImageRefError(
                    f"{file_size(int(length))}, over the limit of {file_size(limit)}"
                )
            chunks, size = [], 0
            while chunk := response.read1(64 * 1024):
                size += len(chunk)
                if size > limit:
                    raise ImageRefError(f"over the limit of {file_size(limit)}")
                chunks.append(chunk)
            if connection.expired:  # the watchdog's shutdown reads as the end of the body
                raise TimeoutError
            return b"".join(chunks)
        except (OSError, http.client.HTTPException) as exc:
            if connection.expired or isinstance(exc, TimeoutError):
                raise ImageRefError(
                    f"download timed out after {settings.IMPORT_URL_TIMEOUT:g} s"
                ) from None
            raise ImageRefError(f"download failed: {exc}") from None
        finally:
            connection.close()
    raise ImageRefError(f"download failed: more than {MAX_REDIRECTS} redirects")
