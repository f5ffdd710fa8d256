"""The OpenAPI document is generated from the schemas and lists every endpoint."""

from __future__ import annotations


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
