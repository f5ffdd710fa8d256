"""A ``multipart`` argument location: the form fields and the files of one multipart body,
loaded by one schema and documented as one ``multipart/form-data`` request body.

flask-smorest documents one body per operation: a form schema and a files schema on the same
route leave one of them as a Swagger 2 ``formData`` parameter, which OpenAPI 3 has no place
for (validators refuse the document, client generators lose the field).
"""

from __future__ import annotations

from typing import Any, ClassVar

from flask import Request
from flask_smorest import Blueprint
from webargs.flaskparser import FlaskParser
from webargs.multidictproxy import MultiDictProxy
from werkzeug.datastructures import CombinedMultiDict

MULTIPART = "multipart"


class MultipartParser(FlaskParser):
    """webargs' Flask parser, with the ``multipart`` location."""

    def __init__(self) -> None:
        super().__init__()
        self.__location_map__ = {**self.__location_map__, MULTIPART: "load_multipart"}

    def load_multipart(self, request: Request, schema: Any) -> MultiDictProxy:
        return MultiDictProxy(CombinedMultiDict([request.form, request.files]), schema)


class MultipartBlueprint(Blueprint):
    """A blueprint whose ``arguments(..., location="multipart")`` reads form fields and files."""

    ARGUMENTS_PARSER = MultipartParser()
    DEFAULT_LOCATION_CONTENT_TYPE_MAPPING: ClassVar[dict[str, str]] = {
        **Blueprint.DEFAULT_LOCATION_CONTENT_TYPE_MAPPING, MULTIPART: "multipart/form-data"}
