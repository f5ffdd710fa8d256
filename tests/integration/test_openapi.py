"""The OpenAPI document is generated from the schemas and lists every endpoint."""

from __future__ import annotations

import json


def test_openapi_document_lists_the_endpoints(app):
    response = app.test_client().get("/api/openapi.json")
    assert response.status_code == 200
    spec = response.json
    assert spec["openapi"].startswith("3.")
    paths = set(spec["paths"])
    assert {"/api/auth/login", "/api/jobs", "/api/jobs/batch", "/api/jobs/{job_id}", "/api/jobs/{job_id}/cancel",
            "/api/workers", "/api/workers/{worker_id}/claim", "/api/workers/{worker_id}/heartbeat",
            "/api/workers/{worker_id}/results", "/api/admin/service-accounts", "/api/health"} <= paths
    create = spec["paths"]["/api/jobs"]["post"]
    assert {"201", "200", "422"} <= set(create["responses"])
    assert create["security"] == [{"bearerAuth": []}]


def test_the_document_validates_and_describes_every_body(app):
    """openapi-spec-validator accepts it (clients generate from it), and every operation that
    takes a body says what the body is."""
    from openapi_spec_validator import validate

    spec = app.test_client().get("/api/openapi.json").json
    validate(spec)
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in ("post", "put", "patch") and not path.endswith(("/cancel", "/retry", "/disable", "/enable",
                                                                         "/rotate", "/deregister", "/logout")):
                assert "requestBody" in operation, f"{method.upper()} {path} describes no body"
            for parameter in operation.get("parameters", []) if method != "parameters" else []:
                assert parameter.get("in", "path") in ("path", "query", "header", "cookie"), (path, parameter)
    assert "``" not in json.dumps(spec)  # descriptions in Markdown, not reStructuredText
    upload = spec["paths"]["/api/files"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    upload = spec["components"]["schemas"][upload["$ref"].rsplit("/", 1)[1]]
    assert set(upload["properties"]) == {"file", "name"}
    assert upload["properties"]["file"] == {"type": "string", "format": "binary"} and "file" in upload["required"]
