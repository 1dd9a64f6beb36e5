"""The control room in a browser: static files shipped in this package, and the HTTP answers
the WebSocket server gives for them (`cbos serve --web`).

The page is public (it holds no secret and no session data); everything it shows comes
over the WebSocket, which needs the token. So the answers here only have to keep the page
to itself: a Content-Security-Policy that allows nothing but this server (scripts, styles,
images and the WebSocket back to the same host), no framing, no sniffing, no referrer.
Nothing is fetched from anywhere else: no CDN, no web font, no build step.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import re
from dataclasses import dataclass
from importlib import resources

# URL path -> (file in this package, Content-Type). Nothing else is served.
FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/page.js": ("page.js", "text/javascript; charset=utf-8"),
    "/page.css": ("page.css", "text/css; charset=utf-8"),
    "/icon.svg": ("icon.svg", "image/svg+xml"),
}
# A Host header fit to be echoed in the CSP: a name or address and a port, nothing else.
_SAFE_HOST = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::\d{1,5})?$")


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes
    etag: str
    content_type: str


@dataclass(frozen=True)
class HttpReply:
    """An HTTP response, before it becomes the server library's object."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


@functools.cache
def assets() -> dict[str, Asset]:
    """Every served file, read once, with its gzip form and an ETag."""
    root = resources.files(__name__)
    found: dict[str, Asset] = {}
    for path, (name, kind) in FILES.items():
        body = root.joinpath(name).read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        found[path] = Asset(body, gzip.compress(body, 9, mtime=0), etag, kind)
    return found


def safe_host(host: str) -> bool:
    return bool(_SAFE_HOST.match(host))


def security_headers(host: str) -> list[tuple[str, str]]:
    """What every answer carries. ``host`` (checked by :func:`safe_host`) is where the page
    connects back: CSP's 'self' covers ws: only in newer browsers, so it is named too."""
    policy = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
              f"connect-src 'self' ws://{host}; base-uri 'none'; form-action 'none'; "
              "frame-ancestors 'none'")
    return [
        ("Content-Security-Policy", policy),
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "DENY"),
        ("Referrer-Policy", "no-referrer"),
        ("Cross-Origin-Opener-Policy", "same-origin"),
        ("Cross-Origin-Resource-Policy", "same-origin"),
        ("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()"),
    ]


def respond(path: str, host: str, accept_encoding: str = "", if_none_match: str = ""
            ) -> HttpReply:
    """The answer to ``GET path`` (query string ignored) arriving with Host ``host``."""
    if not safe_host(host):
        return _text(400, "the Host header is not a host name or address", "localhost")
    asset = assets().get(path.partition("?")[0])
    if asset is None:
        return _text(404, "not found: this server has one page, at /", host)
    headers = [*security_headers(host), ("Content-Type", asset.content_type),
               ("Cache-Control", "no-cache"), ("ETag", asset.etag),
               ("Vary", "Accept-Encoding")]
    if asset.etag in (tag.strip() for tag in if_none_match.split(",")):
        return HttpReply(304, headers, b"")
    body = asset.body
    if _accepts_gzip(accept_encoding):
        body = asset.gzipped
        headers.append(("Content-Encoding", "gzip"))
    return HttpReply(200, headers, body)


def _accepts_gzip(header: str) -> bool:
    """Whether Accept-Encoding allows gzip (``gzip``, ``gzip;q=0.5``; not ``gzip;q=0``)."""
    for part in header.split(","):
        name, _, params = part.strip().partition(";")
        if name.strip().lower() == "gzip":
            key, _, value = params.strip().partition("=")
            if key.strip().lower() != "q":
                return True
            try:
                return float(value) > 0
            except ValueError:
                return False
    return False


def _text(status: int, text: str, host: str) -> HttpReply:
    return HttpReply(status, [*security_headers(host),
                           ("Content-Type", "text/plain; charset=utf-8"),
                           ("Cache-Control", "no-store")], (text + "\n").encode())


def weight() -> dict[str, tuple[int, int]]:
    """Bytes of each served file: (as stored, gzipped)."""
    return {path: (len(a.body), len(a.gzipped)) for path, a in assets().items()}
