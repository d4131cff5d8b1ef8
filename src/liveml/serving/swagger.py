"""`/docs` without the internet: Swagger UI's JavaScript and CSS come from the installed
`swagger-ui-bundle` package, served by the app under STATIC, instead of FastAPI's default CDN
links (a blank page offline, and every visit told a third party about the server).

ReDoc has no such package here, so `/redoc` is off.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi.responses import FileResponse, HTMLResponse

STATIC = "/docs/static"
# The files the page loads, and their media types; nothing else of the package is served.
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}


@cache
def assets_dir() -> Path:
    """The Swagger UI folder of the installed `swagger-ui-bundle` package."""
    import swagger_ui_bundle

    return Path(swagger_ui_bundle.swagger_ui_path)


def page(openapi_url: str, title: str) -> HTMLResponse:
    """The Swagger UI page for the schema at `openapi_url`, every URL in it on this server."""
    from fastapi.openapi.docs import get_swagger_ui_html

    return get_swagger_ui_html(
        openapi_url=openapi_url,
        title=title,
        swagger_js_url=f"{STATIC}/swagger-ui-bundle.js",
        swagger_css_url=f"{STATIC}/swagger-ui.css",
        swagger_favicon_url=f"{STATIC}/favicon-32x32.png",
        # No badge fetched from the online validator (it would send it the schema's URL).
        swagger_ui_parameters={"validatorUrl": None},
    )


def asset(name: str) -> FileResponse | None:
    """One file of ASSETS (None for any other name: there is no path to walk)."""
    media_type = ASSETS.get(name)
    if media_type is None:
        return None
    return FileResponse(
        assets_dir() / name,
        media_type=media_type,
        headers={"Cache-Control": "public, max-age=86400"},
    )
