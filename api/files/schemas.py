"""Bodies of the files endpoints."""

from __future__ import annotations

from marshmallow import fields, validate

from api.pagination import PageArgs
from api.validation import ApiSchema

SORTABLE = ("created_at", "name", "size", "id")


class FileUploadSchema(ApiSchema):
    """multipart/form-data: the FITS file, and optionally a name for it."""

    file = fields.Raw(required=True, metadata={"type": "string", "format": "binary"})
    name = fields.String(load_default=None, validate=validate.Length(min=1, max=255),
                         metadata={"description": "Its name in your library (default: the file's own name)."})


class FileSchema(ApiSchema):
    id = fields.Integer(required=True)
    name = fields.String(required=True)
    size = fields.Integer(required=True, metadata={"description": "Bytes."})
    sha256 = fields.String(required=True)
    content_type = fields.String(required=True)
    storage_key = fields.String(required=True,
                                metadata={"description": "Jobs may also name the file by this key."})
    user_id = fields.Integer(required=True)
    created_at = fields.DateTime(required=True)


class FileListArgs(PageArgs):
    sort = fields.String(
        load_default="-created_at",
        validate=validate.OneOf([f"{sign}{name}" for name in SORTABLE for sign in ("", "-")]),
        metadata={"description": "A field, with '-' for descending."},
    )
    q = fields.String(load_default=None, validate=validate.Length(max=255),
                      metadata={"description": "Only files whose name contains this (case-insensitive)."})


class DownloadSchema(ApiSchema):
    name = fields.String(required=True)
    key = fields.String(required=True)
    size = fields.Integer(allow_none=True)
    sha256 = fields.String(allow_none=True)
    content_type = fields.String(allow_none=True)
    url = fields.String(required=True, metadata={"description": "GET this URL (no token needed) until expires_at."})
    expires_at = fields.DateTime(required=True)
