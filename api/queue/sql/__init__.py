"""The queue's SQL by name: every statement that reads or changes queue state, in one place.

The statements live in the ``.sql`` files beside this module (``jobs.sql``: submission,
cancel and the jobs as users see them; ``attempts.sql``: claim, heartbeat, report, rescue,
release; ``workers.sql``: the workers' rows; ``views.sql``: what admins, metrics and the
maintenance services read and prune), the way procrastinate keeps its ``queries.sql``. Each is
introduced by a ``-- name: <name>`` line; the comment lines right after it describe it.
A ``-- fragment: <name>`` is a piece several statements share, written once and spliced in
where a statement says ``{{name}}`` — the test of a live attempt is one. The Python modules
of :mod:`api.queue` are the driver: they bind parameters, run these and shape the rows;
routes and maintenance services call them and write no queue SQL of their own.
"""

from __future__ import annotations

import re
from importlib import resources

from sqlalchemy import TextClause, text

_HEADER = re.compile(r"^-- (name|fragment): ([a-z_][a-z0-9_]*)[ \t]*$", re.MULTILINE)
_SPLICE = re.compile(r"\{\{([a-z_][a-z0-9_]*)\}\}")


class UnknownQuery(AttributeError):
    """A name no ``.sql`` file of this package defines."""


def parse(source: str, where: str) -> tuple[dict[str, str], dict[str, str]]:
    """One file's statements and fragments by name (their SQL, comment lines included)."""
    statements: dict[str, str] = {}
    fragments: dict[str, str] = {}
    heads = list(_HEADER.finditer(source))
    preamble = source[: heads[0].start()] if heads else source
    if any(line.strip() and not line.lstrip().startswith("--") for line in preamble.splitlines()):
        raise ValueError(f"{where}: SQL before the first '-- name:' line")
    for head, after in zip(heads, [*heads[1:], None], strict=True):
        kind, name = head.groups()
        body = _without_leading_comments(source[head.end(): after.start() if after else len(source)])
        table = statements if kind == "name" else fragments
        if name in statements or name in fragments:
            raise ValueError(f"{where}: {name!r} is defined twice")
        table[name] = body
    return statements, fragments


def _without_leading_comments(sql: str) -> str:
    """The SQL without the comment lines that describe it (they stay in the file, not on the wire)."""
    lines = sql.strip().splitlines()
    while lines and (lines[0].lstrip().startswith("--") or not lines[0].strip()):
        lines.pop(0)
    return "\n".join(lines).strip()


def _spliced(sql: str, fragments: dict[str, str], where: str) -> str:
    def splice(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in fragments:
            raise ValueError(f"{where}: unknown fragment {{{{{name}}}}}")
        return _spliced(fragments[name], fragments, where)

    return _SPLICE.sub(splice, sql)


class Queries:
    """The statements of this package's ``.sql`` files: ``Q.claim`` is the ``claim`` statement,
    ready to execute; :meth:`source` its text (for the few composed at run time)."""

    def __init__(self, files: dict[str, str]) -> None:
        statements: dict[str, tuple[str, str]] = {}
        fragments: dict[str, str] = {}
        for where, source in files.items():
            found, shared = parse(source, where)
            for name in (found.keys() & statements.keys()) | (shared.keys() & fragments.keys()):
                raise ValueError(f"{where}: {name!r} is also defined elsewhere")
            statements.update({name: (where, sql) for name, sql in found.items()})
            fragments.update(shared)
        self._sources = {name: _spliced(sql, fragments, where) for name, (where, sql) in statements.items()}
        self._clauses = {name: text(sql) for name, sql in self._sources.items()}

    def __getattr__(self, name: str) -> TextClause:
        try:
            return self._clauses[name]
        except KeyError:
            raise UnknownQuery(f"no queue statement named {name!r}") from None

    def source(self, name: str) -> str:
        return self._sources[name]

    def names(self) -> list[str]:
        return sorted(self._sources)


def _load() -> Queries:
    folder = resources.files(__name__)
    return Queries({entry.name: entry.read_text(encoding="utf-8")
                    for entry in sorted(folder.iterdir(), key=lambda e: e.name) if entry.name.endswith(".sql")})


#: Every statement, by name.
Q = _load()
