"""OpenAPI: every operation documents its error responses, all in the error envelope.

flask-smorest documents what a view declares (its body, its 200, the ``alt_response``s).
This apispec plugin adds what every view can answer anyway — 401/403 where a token is
required, 429 where the rate limiter applies, 500 and 503 — and gives every error
response without a body schema the ``ErrorEnvelope`` schema, so the document tells the
truth about every status a client may see (schemathesis checks it in the test suite).
"""

from __future__ import annotations

from typing import Any

from apispec import BasePlugin

ERROR_REF = {"$ref": "#/components/schemas/ErrorEnvelope"}
#: Paths the rate limiter skips (service traffic, probes, the document itself).
UNLIMITED_PREFIXES = ("/api/workers", "/api/health", "/api/openapi.json", "/api/docs", "/api/storage", "/metrics")


class ErrorResponses(BasePlugin):
    """Adds the common error responses to every operation (runs after the marshmallow plugin)."""

    def operation_helper(self, path: str | None = None, operations: dict[str, Any] | None = None,
                         **kwargs: Any) -> None:
        for operation in (operations or {}).values():
            responses: dict[str, Any] = operation.setdefault("responses", {})
            common = {"500": "Internal error (it has been logged).",
                      "503": "The database is unavailable, or the server is busy; retry."}
            if operation.get("security"):
                common |= {"401": "Missing, malformed, expired or revoked access token.",
                           "403": "Your role may not call this."}
            if path and not path.startswith(UNLIMITED_PREFIXES):
                common["429"] = "Rate limit exceeded: see the X-RateLimit-* headers and Retry-After."
            documented = {str(status) for status in responses}
            for status, description in common.items():
                if status not in documented:
                    responses[status] = {"description": description}
            for status, response in responses.items():
                code = str(status)
                is_error = code == "default" or (code.isdigit() and int(code) >= 400)
                # A string or a $ref names a registered response, which already has the envelope.
                if is_error and isinstance(response, dict) and "$ref" not in response and "content" not in response:
                    response["content"] = {"application/json": {"schema": ERROR_REF}}


#: The protocol's components are named Worker<Message> (a ``Register`` exists already: accounts).
PROTOCOL_PREFIX = "Worker"
PROTOCOL_REF = "#/components/schemas/" + PROTOCOL_PREFIX + "{name}"


def register_protocol_schemas(spec: Any) -> None:
    """The worker protocol's messages (jobtypes/protocol.py) as components of the document,
    generated from the same types the API decodes with."""
    import msgspec

    from jobtypes.protocol import MESSAGES

    _, components = msgspec.json.schema_components(MESSAGES, ref_template=PROTOCOL_REF)
    for name, schema in components.items():
        spec.components.schema(PROTOCOL_PREFIX + name, component=openapi30(schema))


def openapi30(schema: Any) -> Any:
    """A JSON Schema (2020-12, as msgspec writes it) in OpenAPI 3.0's dialect: a null alternative
    becomes ``nullable: true``, ``const`` a one-value ``enum``, and an empty ``required`` goes. (The document stays 3.0 so that
    the bundled Swagger UI renders it.)"""
    if isinstance(schema, list):
        return [openapi30(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: openapi30(value) for key, value in schema.items()
           if not (key == "required" and value == [])}  # 3.0: a required list is never empty
    if "const" in out:
        out["enum"] = [out.pop("const")]
    if isinstance(out.get("type"), list) and "null" in out["type"]:
        kinds = [k for k in out["type"] if k != "null"]
        out["type"], out["nullable"] = (kinds[0] if len(kinds) == 1 else kinds), True
    options = out.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options:
        rest = [o for o in options if o != {"type": "null"}]
        del out["anyOf"]
        if len(rest) == 1 and "$ref" not in rest[0]:
            out = {**out, **rest[0], "nullable": True}
        else:
            out = {**out, ("allOf" if len(rest) == 1 else "anyOf"): rest, "nullable": True}
    return out


def markdown_descriptions(node: Any) -> Any:
    """The document with its descriptions in Markdown: the docstrings they come from write code as
    reStructuredText's ``double backticks``, which Swagger UI would show literally."""
    if isinstance(node, list):
        return [markdown_descriptions(item) for item in node]
    if not isinstance(node, dict):
        return node
    return {key: (value.replace("``", "`") if key in ("description", "summary") and isinstance(value, str)
                  else markdown_descriptions(value)) for key, value in node.items()}
