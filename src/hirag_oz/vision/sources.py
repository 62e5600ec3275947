"""Where documents come from, and the guards on each way in: `file://` paths inside the
allowed folders, `http(s)://` URLs that are not loopback or private unless allowed, and
uploads. Every limit is checked before a byte is kept."""

from __future__ import annotations

import ipaddress
import socket
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx

from hirag_oz.errors import (
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    UnsupportedMediaTypeError,
    UpstreamError,
    UpstreamTimeoutError,
    ValidationError,
)

SourceKind = Literal["file", "url", "upload"]
MAX_REDIRECTS = 5
# Types a server may declare for a document; the bytes themselves decide the format.
ACCEPTED_CONTENT_TYPES = frozenset(
    {
        "application/pdf",
        "image/png",
        "image/jpeg",
        "image/tiff",
        "application/octet-stream",
        "binary/octet-stream",
    }
)


@dataclass(frozen=True)
class Source:
    kind: SourceKind
    location: str
    """The resolved path, the URL, or the stored upload's path."""
    name: str
    """What a user recognises: the file name, the URL, the uploaded file's name."""


def parse_doc_url(doc_url: str, allowed_paths: Sequence[Path], allow_private: bool) -> Source:
    """The source named by `doc_url`, checked: 403 outside the allowed places, 404 for a
    missing file, 422 for anything that is not a file:// or http(s):// URL."""
    try:
        return _parse_doc_url(doc_url, allowed_paths, allow_private)
    except (ValueError, OSError) as exc:  # a NUL in a path, a malformed host or port, ...
        raise ValidationError(
            f"doc_url is not a usable URL: {type(exc).__name__}", {"field": "doc_url"}
        ) from None


def _parse_doc_url(doc_url: str, allowed_paths: Sequence[Path], allow_private: bool) -> Source:
    if len(doc_url) > 4096:
        raise ValidationError("doc_url is longer than 4096 characters", {"field": "doc_url"})
    parts = urllib.parse.urlsplit(doc_url.strip())
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise PermissionDeniedError("file:// URLs must name a local path", {"doc_url": doc_url})
        path = resolve_allowed(Path(urllib.parse.unquote(parts.path)), allowed_paths)
        return Source("file", str(path), path.name)
    if scheme in ("http", "https"):
        if not parts.hostname:
            raise ValidationError("the URL has no host", {"field": "doc_url"})
        check_host(parts.hostname, parts.port, allow_private)  # .port raises on a bad port
        return Source("url", doc_url.strip(), doc_url.strip())
    raise ValidationError(
        "doc_url must be a file:// or http(s):// URL", {"field": "doc_url", "scheme": scheme}
    )


def resolve_allowed(path: Path, allowed_paths: Sequence[Path]) -> Path:
    """`path` with symlinks and `..` resolved, if that lies inside an allowed folder."""
    if not path.is_absolute():
        raise PermissionDeniedError("file:// paths must be absolute", {"path": str(path)})
    resolved = path.resolve()
    roots = [Path(root).resolve() for root in allowed_paths]
    if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
        raise PermissionDeniedError(
            "the path is outside vision.allowed_paths"
            if roots
            else "file:// documents are off: vision.allowed_paths is empty",
            {"path": str(path)},
        )
    if not resolved.is_file():
        raise NotFoundError("no such file", {"path": str(path)})
    return resolved


def check_host(host: str, port: int | None, allow_private: bool) -> list[str]:
    """The host's addresses; 403 when any is loopback, private, link-local or otherwise not
    public (unless `allow_private`), so a URL cannot reach the service's own network."""
    try:
        infos = socket.getaddrinfo(host, port or 443, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise ValidationError(f"cannot resolve host {host!r}", {"host": host}) from exc
    addresses = sorted({str(info[4][0]) for info in infos})
    if not allow_private:
        for text in addresses:
            address = ipaddress.ip_address(text.split("%", 1)[0])
            if not address.is_global or address.is_multicast:
                raise PermissionDeniedError(
                    "the URL points at a loopback or private address "
                    "(vision.allow_private_urls is off)",
                    {"host": host, "address": text},
                )
    return addresses


def download(url: str, *, max_bytes: int, timeout_secs: float, allow_private: bool) -> bytes:
    """The document at `url`: redirects followed by hand (each hop's host checked), the
    declared type and length checked, and the body cut off at `max_bytes`."""
    with httpx.Client(timeout=timeout_secs, follow_redirects=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            parts = urllib.parse.urlsplit(url)
            if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
                raise ValidationError("redirected to a non-http(s) URL", {"url": url})
            check_host(parts.hostname, parts.port, allow_private)
            try:
                with client.stream("GET", url) as response:
                    if response.is_redirect:
                        location = response.headers.get("location", "")
                        url = urllib.parse.urljoin(url, location)
                        continue
                    if not response.is_success:
                        raise UpstreamError(
                            f"fetching the document failed with status {response.status_code}",
                            {"url": url, "status": response.status_code},
                        )
                    _check_type(response.headers.get("content-type"))
                    declared = response.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > max_bytes:
                        raise too_large(max_bytes)
                    body = bytearray()
                    for chunk in response.iter_bytes():
                        body += chunk
                        if len(body) > max_bytes:
                            raise too_large(max_bytes)
                    return bytes(body)
            except httpx.TimeoutException as exc:
                raise UpstreamTimeoutError(
                    f"fetching the document timed out (timeout {timeout_secs:g}s)", {"url": url}
                ) from exc
            except httpx.HTTPError as exc:
                raise UpstreamError(
                    f"fetching the document failed: {type(exc).__name__}", {"url": url}
                ) from exc
    raise UpstreamError("too many redirects", {"url": url, "max": MAX_REDIRECTS})


def read_file(path: str, allowed_paths: Sequence[Path], max_bytes: int) -> bytes:
    """The file's bytes, its place checked again (a symlink may have changed since)."""
    resolved = resolve_allowed(Path(path), allowed_paths)
    if resolved.stat().st_size > max_bytes:
        raise too_large(max_bytes)
    return resolved.read_bytes()


def _check_type(declared: str | None) -> None:
    media = (declared or "").split(";", 1)[0].strip().lower()
    if media and media not in ACCEPTED_CONTENT_TYPES:
        raise UnsupportedMediaTypeError(
            f"the URL serves {media!r}, not a PDF or an image",
            {"content_type": media, "accepted": sorted(ACCEPTED_CONTENT_TYPES)},
        )


def too_large(max_bytes: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"the document is larger than {max_bytes} bytes (vision.max_document_mb)",
        {"max_bytes": max_bytes},
    )
