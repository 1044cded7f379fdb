"""The page at the API's address: what this is and where to go (a browser's first stop)."""

from __future__ import annotations

from html import escape

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from shellwego import __version__
from shellwego.api.deps import Ctx

router = APIRouter(tags=["health"])

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ShellWeGo</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:40em;margin:3em auto;padding:0 1em}}
code,pre{{background:#f4f4f4;padding:.1em .3em}}pre{{padding:.8em}}</style></head>
<body><h1>ShellWeGo {version}</h1>
<p>This is the API of a ShellWeGo platform. Use it with the <code>shellwego</code> command:</p>
<pre>shellwego login --api-url {url}
shellwego apps create hello
shellwego deploy . -a hello</pre>
<p>Apps answer at <code>https://&lt;app&gt;.{base}</code>.
The API is described at <a href="/docs">/docs</a>
(OpenAPI: <a href="/openapi.json">/openapi.json</a>).</p>
</body></html>
"""


@router.get("/", response_class=HTMLResponse, include_in_schema=False, name="home")
def home(ctx: Ctx) -> HTMLResponse:
    """Not part of the API: a page for a browser that opens the API's address."""
    settings = ctx.settings
    return HTMLResponse(
        PAGE.format(
            version=escape(__version__),
            url=escape(settings.api_url),
            base=escape(settings.base_domain),
        )
    )
