"""The offline docs page (Swagger UI from the installed package) and CORS on ``/api/*``."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest

ORIGIN = "https://app.example.org"
EXPOSED = {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "retry-after", "etag"}


class _Links(HTMLParser):
    """Every src and href in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def test_docs_page_loads_every_asset_from_this_app(app):
    client = app.test_client()
    page = client.get("/api/docs")
    assert page.status_code == 200
    assert page.content_type.startswith("text/html")
    html = page.get_data(as_text=True)
    parser = _Links()
    parser.feed(html)
    names = {urlsplit(url).path.rsplit("/", 1)[-1] for url in parser.urls}
    assert {"swagger-ui-bundle.js", "swagger-ui.css"} <= names
    for url in parser.urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc, f"{url} is not served by this app"
        with client.get(url) as asset:
            assert asset.status_code == 200, url
            assert len(asset.get_data()) > 1000, url
    # The UI reads the document this app serves, and nothing names an outside host.
    assert '"/api/openapi.json"' in html
    assert client.get("/api/openapi.json").status_code == 200
    for outside in ("http://", "https://", "//cdn", "unpkg", "jsdelivr"):
        assert outside not in html


def test_docs_assets_are_cacheable_and_confined_to_the_bundle(app):
    client = app.test_client()
    with client.get("/api/docs/static/swagger-ui-bundle.js") as asset:
        assert asset.status_code == 200
        assert "max-age" in asset.headers["Cache-Control"]
    assert client.get("/api/docs/static/../../../../etc/passwd").status_code == 404
    assert client.get("/api/docs/static/no-such-file.js").status_code == 404


def _preflight(client, origin: str, path: str = "/api/jobs"):
    return client.options(path, headers={
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Authorization, Content-Type",
    })


def test_cors_is_off_without_configured_origins(app):
    client = app.test_client()
    assert "Access-Control-Allow-Origin" not in _preflight(client, ORIGIN).headers
    assert "Access-Control-Allow-Origin" not in client.get("/api/health", headers={"Origin": ORIGIN}).headers


@pytest.fixture
def cors_app(app_factory):
    return app_factory(cors_origins=(ORIGIN, "http://localhost:5173"))


def test_preflight_from_an_allowed_origin(cors_app):
    response = _preflight(cors_app.test_client(), ORIGIN)
    assert response.status_code == 200
    headers = response.headers
    assert headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in headers["Access-Control-Allow-Methods"]
    allowed = {h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed
    assert int(headers["Access-Control-Max-Age"]) > 0
    assert "Access-Control-Allow-Credentials" not in headers


def test_preflight_asking_for_a_header_not_allowed(cors_app):
    response = cors_app.test_client().options("/api/jobs", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "X-Secret",
    })
    assert "x-secret" not in response.headers.get("Access-Control-Allow-Headers", "").lower()


def test_other_allowed_request_headers(cors_app):
    response = cors_app.test_client().options("/api/jobs/1/events", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "If-None-Match, Last-Event-ID",
    })
    allowed = {h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"if-none-match", "last-event-id"} <= allowed


def test_preflight_from_another_origin_gets_no_grant(cors_app):
    response = _preflight(cors_app.test_client(), "https://evil.example.com")
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Access-Control-Allow-Methods" not in response.headers


def test_simple_request_from_an_allowed_origin_exposes_the_headers(cors_app):
    response = cors_app.test_client().get("/api/health", headers={"Origin": "http://localhost:5173"})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:5173"
    exposed = {h.strip().lower() for h in response.headers["Access-Control-Expose-Headers"].split(",")}
    assert EXPOSED <= exposed
    assert "Origin" in response.headers.get("Vary", "")


def test_simple_request_from_another_origin_is_answered_without_a_grant(cors_app):
    response = cors_app.test_client().get("/api/health", headers={"Origin": "https://evil.example.com"})
    assert response.status_code == 200  # CORS is enforced by the browser: no grant, no read
    assert "Access-Control-Allow-Origin" not in response.headers


def test_error_responses_carry_the_grant_too(cors_app):
    response = cors_app.test_client().get("/api/jobs", headers={"Origin": ORIGIN})
    assert response.status_code == 401
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN


def test_cors_covers_only_the_api(cors_app):
    response = cors_app.test_client().get("/metrics", headers={"Origin": ORIGIN})
    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in response.headers


def test_any_origin_with_a_star(app_factory):
    client = app_factory(cors_origins=("*",)).test_client()
    response = client.get("/api/health", headers={"Origin": "https://anywhere.example.net"})
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert _preflight(client, "https://anywhere.example.net").headers["Access-Control-Allow-Origin"] == "*"
