"""The playground: one page (``GET /``) and its static files (``GET /assets/<file>``), served by the service.

Plain HTML, CSS and JavaScript from ``web/static`` with no build step and nothing fetched from
elsewhere, so it works offline and on Lambda. The page holds no data: everything it shows comes from
the API, called from the browser with the key the user types in, so on API Gateway the page and its
files are exempt from the API key like ``/health``.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from pathlib import Path

from flask import Blueprint, Response

STATIC_FOLDER = Path(__file__).with_name("static")
PAGE = "index.html"
# The page's one inline script (it adds the trailing slash API Gateway's stage root can lack, before
# the relative links to the static files are resolved); the policy admits it by its hash alone.
INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)

playground = Blueprint("playground", __name__, static_folder="static", static_url_path="/assets")


@cache
def content_security_policy() -> str:
    """The page's policy: its own files and API only, its inline script by hash, no framing."""
    page = (STATIC_FOLDER / PAGE).read_text(encoding="utf-8")
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii") + "'"
        for script in INLINE_SCRIPT.findall(page)
    )
    return (
        f"default-src 'none'; script-src 'self' {hashes}; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


@playground.get("/")
def index() -> Response:
    """The playground page."""
    return playground.send_static_file(PAGE)


@playground.after_request
def page_headers(response: Response) -> Response:
    """The policy on the page and its files; revalidated on every load (ETag), so no release mixes with an old one."""
    response.headers["Content-Security-Policy"] = content_security_policy()
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-cache"
    return response
