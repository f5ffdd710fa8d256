"""How a job names an input file: by uploaded file id, by storage key, or by public URL.

A job type's input schema declares such a field with :func:`InputFile`, e.g.
``image = InputFile(required=True)``. Submitted as one of::

    {"file_id": 12}                       a file the caller uploaded (POST /api/files)
    {"key": "jobs/7/attempt-1-5f0c2a9e81d34b7a/out.fits"}  an object in storage the caller may read
    {"url": "https://…/image.fits"}      a public URL the worker fetches (size-limited)

The API checks that the caller may read each reference before the job is queued, and
:func:`file_refs` finds them in a loaded payload without knowing the job type.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

MAX_URL_LENGTH = 2000
MAX_KEY_LENGTH = 1024
REF_KINDS = ("file_id", "key", "url")


class InputFileSchema(Schema):
    """Exactly one of ``file_id``, ``key`` or ``url``."""

    file_id = fields.Integer(strict=True, validate=validate.Range(min=1))
    key = fields.String(validate=validate.Length(min=1, max=MAX_KEY_LENGTH))
    url = fields.Url(schemes={"http", "https"}, require_tld=False, validate=validate.Length(max=MAX_URL_LENGTH))

    @validates_schema
    def exactly_one(self, data: dict[str, Any], **_: Any) -> None:
        given = [kind for kind in REF_KINDS if kind in data]
        if len(given) != 1:
            raise ValidationError(f"give exactly one of {', '.join(REF_KINDS)}")


def InputFile(**kwargs: Any) -> fields.Nested:
    """A field holding one input-file reference."""
    metadata = {"description": "An input file: {file_id} | {key} | {url}."} | kwargs.pop("metadata", {})
    return fields.Nested(InputFileSchema, metadata=metadata, **kwargs)


def file_refs(schema: Schema, data: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every input-file reference in ``data`` (loaded by ``schema``), with its dotted path."""
    if not isinstance(data, dict):
        return
    for name, field in schema.fields.items():
        key = field.data_key or name
        if key not in data or data[key] is None:
            continue
        yield from _refs_in(field, data[key], f"{path}.{key}" if path else key)


def _refs_in(field: fields.Field, value: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(field, fields.Nested):
        nested = field.schema
        items = value if field.many else [value]
        for index, item in enumerate(items):
            item_path = f"{path}.{index}" if field.many else path
            if isinstance(nested, InputFileSchema):
                yield item_path, item
            else:
                yield from file_refs(nested, item, item_path)
    elif isinstance(field, fields.List) and isinstance(value, list):
        for index, item in enumerate(value):
            yield from _refs_in(field.inner, item, f"{path}.{index}")


class HduField(fields.Field):
    """An HDU by index (``0``, ``1`` …) or by name (``"SCI"``, ``"SCI,2"`` for EXTVER 2).

    Omitted (None): the handler picks the first HDU holding a 2-D image (or a table, for
    table job types).
    """

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int | str:
        if isinstance(value, bool):
            raise ValidationError("must be an HDU index (integer ≥ 0) or an HDU name")
        if isinstance(value, int):
            if not 0 <= value <= MAX_HDU_INDEX:
                raise ValidationError(f"HDU index must be between 0 and {MAX_HDU_INDEX}")
            return value
        if isinstance(value, str) and 0 < len(value.strip()) <= 70:
            return value.strip()
        raise ValidationError("must be an HDU index (integer ≥ 0) or an HDU name (1–70 characters)")


MAX_HDU_INDEX = 999


def Hdu(**kwargs: Any) -> HduField:
    """The ``hdu`` field of a job type's input schema (default None: the first suitable HDU)."""
    kwargs.setdefault("load_default", None)
    kwargs.setdefault("allow_none", True)
    metadata = {"description": "HDU index or name (default: the first suitable HDU)."} | kwargs.pop("metadata", {})
    return HduField(metadata=metadata, **kwargs)
