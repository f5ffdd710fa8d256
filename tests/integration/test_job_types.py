"""``GET /api/job-types``: the catalogue as clients read it, its input schemas true to validation."""

from __future__ import annotations

import jsonschema
import pytest

from jobtypes import CATALOGUE


def test_every_type_is_listed_with_its_policy(app):
    client = app.test_client()
    answer = client.get("/api/job-types")
    assert answer.status_code == 200
    types = {t["name"]: t for t in answer.json["data"]}
    assert sorted(types) == sorted(CATALOGUE) and answer.json["meta"]["count"] == len(CATALOGUE)
    detect = types["sources.detect"]
    assert detect["retry"] == {"max_attempts": 3, "backoff_base_s": 2.0, "backoff_cap_s": 60.0}
    assert detect["timeout_s"] == CATALOGUE["sources.detect"].timeout_s
    assert detect["description"] == CATALOGUE["sources.detect"].description
    assert {"name": "n_sources", "type": "integer"}.items() <= next(
        f for f in detect["result_fields"] if f["name"] == "n_sources").items()
    props = detect["input_schema"]["properties"]
    assert props["method"]["enum"] == ["daofind", "segmentation"] and props["method"]["default"] == "daofind"
    assert (props["threshold_sigma"]["minimum"], props["threshold_sigma"]["maximum"]) == (1.0, 50.0)
    assert props["file"]["$ref"] == "#/$defs/InputFile" and "InputFile" in detect["input_schema"]["$defs"]
    assert detect["input_schema"]["required"] == ["file"]
    one = client.get("/api/job-types/sources.detect")
    assert one.status_code == 200 and one.json["data"] == detect


def test_an_unknown_type_is_404_in_the_envelope(app):
    answer = app.test_client().get("/api/job-types/no.such")
    assert answer.status_code == 404 and answer.json["error"]["code"] == "NOT_FOUND"


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_each_input_schema_is_valid_json_schema(app, name):
    schema = app.test_client().get(f"/api/job-types/{name}").json["data"]["input_schema"]
    jsonschema.Draft202012Validator.check_schema(schema)


def test_the_schema_agrees_with_the_api_on_good_and_bad_input(app, alice):
    schema = app.test_client().get("/api/job-types/sleep").json["data"]["input_schema"]
    good, bad = {"seconds": 0.01, "tag": "ok"}, {"seconds": -1}
    jsonschema.validate(good, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    assert alice.post("/api/jobs", {"type": "sleep", "input_payload": good}).status_code == 201
    refused = alice.post("/api/jobs", {"type": "sleep", "input_payload": bad})
    assert refused.status_code == 422 and "input_payload.seconds" in refused.json["error"]["details"]["fields"]


def test_the_endpoint_is_in_the_openapi_document(app):
    paths = app.test_client().get("/api/openapi.json").json["paths"]
    assert "get" in paths["/api/job-types"] and "get" in paths["/api/job-types/{name}"]
