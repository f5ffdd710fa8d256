"""Pagination shared by every list endpoint: ``page``/``limit`` arguments and ``meta.pagination``."""

from __future__ import annotations

from typing import Any

from marshmallow import fields, validate

from api.validation import QueryArgs

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
#: Beyond this the OFFSET would be absurd (and past 2**63 an error); deep listing uses filters.
MAX_PAGE = 1_000_000


class PageArgs(QueryArgs):
    """``page`` (from 1) and ``limit`` (1-100); list endpoints subclass it with filters and ``sort``."""

    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=MAX_PAGE))
    limit = fields.Integer(load_default=DEFAULT_PAGE_SIZE, validate=validate.Range(min=1, max=MAX_PAGE_SIZE))


def sort_choices(*columns: str) -> list[str]:
    """Every accepted ``sort`` value for these columns: ``name`` ascending, ``-name`` descending."""
    return [f"{sign}{name}" for name in columns for sign in ("", "-")]


def offset(page: int, limit: int) -> int:
    """Rows to skip for this page."""
    return (page - 1) * limit


def pagination(page: int, limit: int, total: int) -> dict[str, Any]:
    """``meta.pagination``: a page past the end is empty, with the true totals."""
    pages = (total + limit - 1) // limit
    return {"page": page, "per_page": limit, "total": total, "pages": pages,
            "has_next": page < pages, "has_prev": page > 1}
