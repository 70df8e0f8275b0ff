"""The API's interactive documentation (Swagger UI) served from this package, never a CDN.

The assets come from the `swagger-ui-bundle-v2` package (Swagger UI 5: FastAPI describes
its API in OpenAPI 3.1, which Swagger UI 4 cannot read); the page and its start script are
our own (`notifier/static/`, in the notifier's package data), so the page's policy needs no
inline script. ReDoc is not served: no package ships its assets to serve locally.
`/openapi.json` is the document either way.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse
from swagger_ui_bundle import swagger_ui_path

from linli.cloud.headers import page_csp

STATIC = Path(__file__).parent / "static"
ASSETS = {
    "swagger-ui.css": Path(swagger_ui_path) / "swagger-ui.css",
    "swagger-ui-bundle.js": Path(swagger_ui_path) / "swagger-ui-bundle.js",
    "favicon-32x32.png": Path(swagger_ui_path) / "favicon-32x32.png",
    "start.js": STATIC / "docs-start.js",
}
# Paths anyone may read: the page, its assets and the site's icon hold no data.
PATHS = frozenset({"/docs", "/favicon.ico", *(f"/docs/{name}" for name in ASSETS)})
# Swagger UI styles some elements in attributes, and shows its icons as data: URIs.
CSP = page_csp("", styles="'unsafe-inline'", images="'self' data:")


def add_docs(api: FastAPI) -> None:
    """`GET /docs` and its assets on an app made with `docs_url=None, redoc_url=None`."""
    page = (STATIC / "docs.html").read_text(encoding="utf-8")

    @api.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(page.replace("{title}", api.title), headers={"Content-Security-Policy": CSP})

    @api.get("/favicon.ico", include_in_schema=False)
    async def icon() -> FileResponse:
        # Every browser asks for it; a 401 there read as a broken page in the console.
        return FileResponse(ASSETS["favicon-32x32.png"], media_type="image/png")

    @api.get("/docs/{name}", include_in_schema=False)
    async def asset(name: str) -> FileResponse:
        if name not in ASSETS:
            raise HTTPException(404, f"no such file: {name}")
        return FileResponse(ASSETS[name])
