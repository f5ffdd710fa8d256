"""``/api/docs``: Swagger UI served from the installed ``swagger-ui-bundle`` package.

flask-smorest renders the page (``OPENAPI_SWAGGER_UI_PATH``) and loads the UI's script and
stylesheet from ``OPENAPI_SWAGGER_UI_URL``, which points at the static route below instead of
a CDN: the docs work on a machine with no internet access and send no reader to a third party.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Blueprint, Response, send_from_directory
from swagger_ui_bundle import swagger_ui_path

#: Where the Swagger UI assets are served; flask-smorest appends the file names.
SWAGGER_UI_ASSETS_URL = "/api/docs/static/"
#: The assets change only with the package version: let browsers keep them for a day.
ASSET_MAX_AGE_S = 24 * 3600

#: flask-smorest settings for the docs page (read when the Api is created).
SWAGGER_UI_CONFIG: dict[str, Any] = {
    "OPENAPI_SWAGGER_UI_PATH": "docs",
    "OPENAPI_SWAGGER_UI_URL": SWAGGER_UI_ASSETS_URL,
}

_ASSETS = Path(str(swagger_ui_path))

blp = Blueprint("docs-assets", __name__)


@blp.route(SWAGGER_UI_ASSETS_URL + "<path:filename>")
def swagger_ui_asset(filename: str) -> Response:
    """A file of the Swagger UI distribution (send_from_directory refuses paths outside it)."""
    return send_from_directory(_ASSETS, filename, max_age=ASSET_MAX_AGE_S)
