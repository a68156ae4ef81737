"""``GET /jobs``: a small status page (one HTML file with its script, no build step).

The page lists the tenant's jobs (``GET /v1/jobs``) and follows each unfinished one live through
its SSE endpoint, read with ``fetch`` (``EventSource`` cannot send an Authorization header). The
API key is taken from the URL fragment (``/jobs#key=...``, never sent to the server in the URL)
or typed into the page, and kept in the tab's ``sessionStorage`` only.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

__all__ = ["page_routes"]

_HTML = (Path(__file__).parent / "jobs.html").read_text(encoding="utf-8")


async def page(request: Request) -> HTMLResponse:
    return HTMLResponse(_HTML, headers={"cache-control": "no-cache",
                                        "content-security-policy": "default-src 'self'; "
                                        "script-src 'unsafe-inline'; style-src 'unsafe-inline'",
                                        "referrer-policy": "no-referrer"})


def page_routes() -> list[Route]:
    return [Route("/jobs", page, methods=["GET"])]
