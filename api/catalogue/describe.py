"""Each job type described for clients: its input as a JSON Schema, its result fields, its policy.

The input schema is the one the API validates submissions with (a marshmallow schema in
``jobtypes``), converted by apispec's marshmallow converter, so the description cannot drift
from the validation: defaults, bounds (``minimum``/``maximum``, lengths) and enums come from
the fields' ``load_default`` and validators. Nested schemas (an input file) go under ``$defs``.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from jobtypes import CATALOGUE, JobType

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_COMPONENTS = "#/components/schemas/"


def _rewrite_refs(node: Any) -> Any:
    """OpenAPI component references → JSON Schema ``$defs`` references."""
    if isinstance(node, dict):
        return {k: (f"#/$defs/{v.removeprefix(_COMPONENTS)}" if k == "$ref" and isinstance(v, str) else _rewrite_refs(v))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_rewrite_refs(v) for v in node]
    return node


def json_schema(job_type: JobType, which: str = "input") -> dict[str, Any]:
    """The type's input (or result) schema as a standalone JSON Schema (2020-12)."""
    schema = job_type.input_schema if which == "input" else job_type.result_schema
    if schema is None:
        return {"$schema": JSON_SCHEMA_DIALECT, "type": "object"}
    spec = APISpec(title=job_type.name, version="1", openapi_version="3.1.0", plugins=[MarshmallowPlugin()])
    spec.components.schema(job_type.name, schema=schema)
    components = spec.to_dict()["components"]["schemas"]
    root = _rewrite_refs(components.pop(job_type.name))
    document = {"$schema": JSON_SCHEMA_DIALECT, "title": job_type.name, **root}
    if components:
        document["$defs"] = _rewrite_refs(components)
    return document


def _fields(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The top-level properties of a JSON Schema as a list of {name, type, description}."""
    def kind(prop: dict[str, Any]) -> str:
        found = prop.get("type", "object" if "$ref" in prop else "any")
        return " | ".join(found) if isinstance(found, list) else str(found)

    return [{"name": name, "type": kind(prop),
             "description": prop.get("description", "")}
            for name, prop in schema.get("properties", {}).items()]


@cache
def describe(name: str) -> dict[str, Any]:
    """One type as ``GET /api/job-types`` lists it."""
    job_type = CATALOGUE[name]
    return {
        "name": job_type.name,
        "description": job_type.description,
        "input_schema": json_schema(job_type, "input"),
        "result_fields": _fields(json_schema(job_type, "result")),
        "retry": {"max_attempts": job_type.retry.max_attempts, "backoff_base_s": job_type.retry.backoff_base_s,
                  "backoff_cap_s": job_type.retry.backoff_cap_s},
        "timeout_s": job_type.timeout_s,
        "resource_class": job_type.resource_class,
    }


def describe_all() -> list[dict[str, Any]]:
    """Every type, by name."""
    return [describe(name) for name in sorted(CATALOGUE)]
