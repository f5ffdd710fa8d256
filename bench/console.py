"""Scenario ``console``: how fast the web console's pages answer with a big job table, and
how much it sends to a browser.

The database gets ``--console-jobs`` jobs of the admin (90 % SUCCEEDED with an attempt each,
their ends spread over the last week; 5 % FAILED; 5 % PENDING), then each page is fetched
``--console-repeats`` times by a browser-like client signed in to the console (session
cookie), after two warm-up fetches; p50 and p95 per page, target p95 ≤ 300 ms. The console's
own scripts and styles and the vendored libraries are reported gzipped (what a browser
downloads once).
"""

from __future__ import annotations

import gzip
import re
import time

import requests

from bench.errors import BenchError
from bench.figures import ScenarioResult, Target, figure, percentile, say
from bench.fleet import ADMIN_EMAIL, ADMIN_PASSWORD, ROOT, Fleet
from bench.options import Options

PAGE_P95_MS = 300.0
STATIC = ROOT / "api" / "console" / "static"

_FILL = """
    WITH admin AS (SELECT id FROM users WHERE email = %(email)s)
    INSERT INTO jobs (type, input_payload, input_hash, max_attempts, user_id, status, attempt, run_after,
                      created_at, started_at, finished_at, error)
    SELECT 'noop', jsonb_build_object('tag', 'tag-' || g), md5(g::text) || md5((g + 7)::text), 3, admin.id,
           CASE WHEN g %% 20 = 0 THEN 'FAILED' WHEN g %% 20 = 1 THEN 'PENDING' ELSE 'SUCCEEDED' END,
           CASE WHEN g %% 20 = 1 THEN 0 ELSE 1 END,
           now() - make_interval(secs => (g * 6048.0 / %(n)s) * 100),
           now() - make_interval(secs => (g * 6048.0 / %(n)s) * 100),
           CASE WHEN g %% 20 = 1 THEN NULL ELSE now() - make_interval(secs => (g * 6048.0 / %(n)s) * 100 - 1) END,
           CASE WHEN g %% 20 = 1 THEN NULL ELSE now() - make_interval(secs => (g * 6048.0 / %(n)s) * 100 - 2) END,
           CASE WHEN g %% 20 = 0 THEN '{"code": "HANDLER_ERROR", "message": "bad pixels"}'::jsonb END
    FROM admin, generate_series(1, %(n)s) g
"""

_ATTEMPTS = """
    INSERT INTO job_attempts (job_id, attempt, due_at, started_at, heartbeat_at, ended_at, outcome, error,
                              result_payload)
    SELECT id, 1, run_after, started_at, started_at, finished_at,
           CASE WHEN status = 'FAILED' THEN 'FAILED' ELSE 'SUCCEEDED' END, error,
           CASE WHEN status = 'SUCCEEDED' THEN '{"ok": true}'::jsonb END
    FROM jobs WHERE status <> 'PENDING'
"""


def sign_in(base_url: str) -> requests.Session:
    """A session signed in to the console as the admin (as a browser: the form, then the cookie)."""
    session = requests.Session()
    page = session.get(f"{base_url}/login", timeout=30)
    nonce = re.search(r'name="nonce" value="([^"]+)"', page.text)
    if nonce is None:
        raise BenchError("the sign-in page has no form")
    answer = session.post(f"{base_url}/login", data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD,
                                                     "nonce": nonce.group(1)}, allow_redirects=False, timeout=30)
    if answer.status_code != 302:
        raise BenchError(f"console sign-in: HTTP {answer.status_code}")
    return session


def bench_console(fleet: Fleet, opts: Options) -> ScenarioResult:
    result = ScenarioResult()
    fleet.ensure_api()
    fleet.reset()
    db = fleet.sql()
    say(f"  filling {opts.console_jobs:,} jobs (and their attempts) …")
    db.execute(_FILL, {"email": ADMIN_EMAIL, "n": opts.console_jobs})
    db.execute(_ATTEMPTS)
    db.execute("ANALYZE jobs; ANALYZE job_attempts")
    some_job = db.value("SELECT max(id) FROM jobs WHERE status = 'SUCCEEDED'")
    session = sign_in(fleet.api_url)
    pages = ["/overview", "/overview/live", "/jobs", "/jobs?status=FAILED", f"/jobs?q=tag-{opts.console_jobs // 2}",
             "/jobs?since=day&sort=priority", "/jobs?page=2000", f"/jobs/{some_job}", "/files", "/fleet",
             "/accounts", "/api/admin/history?window=hour", "/api/admin/history?window=day",
             "/api/admin/history?window=week"]
    try:
        for path in pages:
            times = []
            for i in range(opts.console_repeats + 2):
                started = time.perf_counter()
                response = session.get(f"{fleet.api_url}{path}", timeout=60)
                elapsed = (time.perf_counter() - started) * 1000
                if response.status_code != 200:
                    raise BenchError(f"GET {path}: HTTP {response.status_code}")
                if i >= 2:
                    times.append(elapsed)
            p50, p95 = percentile(times, 50), percentile(times, 95)
            result.figures.append(figure("console", f"GET {path} p95", p95, "ms", Target("<=", PAGE_P95_MS),
                                         p50_ms=p50, requests=len(times), jobs=opts.console_jobs))
            result.notes.append(f"{path}: p50 {p50:.1f} ms, p95 {p95:.1f} ms")
    finally:
        session.close()
    result.notes += asset_sizes()
    return result


def asset_sizes() -> list[str]:
    """The console's scripts and styles, raw and gzipped (KiB)."""
    notes = []
    for path in sorted(STATIC.rglob("*")):
        if path.suffix in (".js", ".css") and path.is_file():
            raw = path.read_bytes()
            notes.append(f"{path.relative_to(STATIC)}: {len(raw) / 1024:.1f} KiB, "
                         f"{len(gzip.compress(raw, 9)) / 1024:.1f} KiB gzipped")
    return notes



