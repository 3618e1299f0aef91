"""The operator console's page: GET /console and /console/{file}, static files from the
package (api/console_files/: plain HTML, CSS and ES modules, no build step).

The page and its scripts are public; all they show that is private comes from admin
routes, with the token the operator types in, which the page keeps in memory only
(api/console_files/api.js); the market view reads the public routes. Files are read once
at start, each with its content type and a strong ETag.
There is no build step to give files fingerprinted names, so nothing may be cached
without asking: `no-cache` makes the browser revalidate every load, which costs a 304.

The Content-Security-Policy lets the page run its own scripts and styles only, talk to its
own origin only, submit no form anywhere and be framed by no one; Trusted Types forbid
HTML string sinks (innerHTML), so data from the API can only ever become text.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from api.errors import HTTPError
from api.request import Reply
from api.rsgi import HTTPProtocol, Scope
from schema.codes import ApiError

FILES = Path(__file__).resolve().parent / "console_files"
INDEX = "index.html"
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",  # ES modules need a JavaScript type
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    ]
)
SECURITY = [
    ("content-security-policy", CSP),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
]


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    etag: str
    headers: list[tuple[str, str]]


def _load(folder: Path) -> dict[str, StaticFile]:
    files = {}
    for path in sorted(folder.iterdir()):
        kind = TYPES.get(path.suffix)
        if kind is None or not path.is_file():
            continue
        body = path.read_bytes()
        etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
        headers = [
            ("content-type", kind),
            ("cache-control", "no-cache"),
            ("etag", etag),
            *SECURITY,
        ]
        files[path.name] = StaticFile(body, etag, headers)
    if INDEX not in files:
        raise FileNotFoundError(f"{folder / INDEX} is missing")
    return files


class ConsolePage:
    """GET /console (the page) and GET /console/{file} (its modules, style and icon)."""

    def __init__(self, folder: Path = FILES) -> None:
        self.files = _load(folder)

    async def index(self, scope: Scope, proto: HTTPProtocol, _: str) -> Reply:
        return self._serve(scope, self.files[INDEX])

    async def asset(self, scope: Scope, proto: HTTPProtocol, name: str) -> Reply:
        found = self.files.get(name) if name != INDEX else None
        if found is None:
            raise HTTPError(ApiError.NOT_FOUND, f"no such console file: {name[:64]!r}")
        return self._serve(scope, found)

    def _serve(self, scope: Scope, found: StaticFile) -> Reply:
        wanted = scope.headers.get("if-none-match")
        if wanted is not None and found.etag in _etags(wanted):
            return 304, b"", found.headers
        return 200, found.body, found.headers


def _etags(header: str) -> set[str]:
    # If-None-Match: "a", W/"b" (a weak match is enough for GET, RFC 9110 §13.1.2)
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}
