"""The web console in a real browser: Playwright driving Debian's headless Chromium against the
API under gunicorn, with real worker (and manager) processes.

Screenshots of the main pages go to ``.skyfleet/screenshots/`` for a person to look at.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser, Page, expect, sync_playwright

from api.auth import service as accounts
from api.auth.models import Role
from tests.acceptance.conftest import PASSWORD, Fleet
from tests.acceptance.test_manager_local import ManagerProcess, manager  # noqa: F401 (a fixture)
from tests.handlers.fitsfactory import gaussian_stars, make_wcs, write_image
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / ".skyfleet" / "screenshots"
CHROMIUM = os.environ.get("SKYFLEET_CHROMIUM", "/usr/bin/chromium")
SHAPE = (200, 200)
STARS = [(40.3, 50.7), (120.5, 80.2), (160.1, 150.9), (70.8, 170.4)]
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"the console's browser tests need Chromium at {CHROMIUM} "
                    "(apt-get install chromium, or set SKYFLEET_CHROMIUM); `make test` installs it as root")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield browser
        browser.close()


def people(fleet: Fleet) -> None:
    with fleet.engine.begin() as conn:
        for email, role in (("alice@example.org", Role.USER), ("bob@example.org", Role.USER),
                            ("vera@example.org", Role.VIEWER)):
            accounts.create_user(conn, email, PASSWORD, [role])


#: Script errors and refused resources (a CSP violation is one) of every page, by page.
PROBLEMS: dict[int, list[str]] = {}


def sign_in(browser: Browser, fleet: Fleet, email: str, **context: object) -> Page:
    page = browser.new_context(base_url=fleet.url, accept_downloads=True, **context).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    problems = PROBLEMS.setdefault(id(page), [])
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    # Not problems: an HTTP error answer (a 422 the test provokes) is logged as "Failed to load
    # resource"; htmx's SSE extension logs "[object Event]" when a stream ends (it reconnects).
    page.on("console", lambda message: problems.append(message.text) if message.type == "error"
            and not message.text.startswith("Failed to load resource") and message.text != "[object Event]"
            else None)
    page.goto("/")
    expect(page).to_have_url(f"{fleet.url}/login?next=/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    if page.locator("#login-error").count():
        raise AssertionError(page.locator("#login-error").inner_text())
    expect(page.locator("h1")).to_have_text("Overview")
    page.wait_for_load_state("load")  # the stylesheet too (the DOM can be there before it)
    return page


def shot(page: Page, name: str) -> None:
    """A screenshot for people to look at; the page must have run without a script error or a
    refused resource (a CSP violation) so far."""
    assert PROBLEMS.get(id(page), []) == [], PROBLEMS[id(page)]
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_an_astronomer_detects_sources_and_others_see_nothing(browser: Browser, fleet: Fleet, tmp_path: Path):
    people(fleet)
    fleet.start_worker()
    image = write_image(tmp_path / "field.fits", gaussian_stars(SHAPE, STARS, 5000.0, fwhm_px=3.0),
                        make_wcs(SHAPE, scale_arcsec=1.0))
    alice = sign_in(browser, fleet, "alice@example.org")
    shot(alice, "overview-user")

    # Submit sources.detect from the form generated from its schema, uploading the FITS inline.
    alice.get_by_role("navigation").get_by_role("link", name="Submit").click()
    alice.get_by_role("link", name="sources.detect").click()
    expect(alice.locator('[data-field="method"] select')).to_have_value("daofind")  # the schema's default
    expect(alice.locator('input[name="threshold_sigma"]')).to_have_attribute("max", "50.0")
    alice.locator('input[data-upload-for="file"]').set_input_files(str(image))
    expect(alice.locator('select[name="file"] option:checked')).to_contain_text("field.fits")
    alice.locator('input[name="threshold_sigma"]').fill("999")
    alice.get_by_role("button", name="Submit").click()
    expect(alice.locator('[data-field="threshold_sigma"] .field-error')).to_be_visible()  # the API's 422, placed
    alice.locator('input[name="threshold_sigma"]').fill("5")
    shot(alice, "submit-form")
    alice.get_by_role("button", name="Submit").click()
    expect(alice).to_have_url(re.compile(r"/jobs/\d+$"))
    job_url = alice.url
    job_id = int(job_url.rsplit("/", 1)[1])

    # Followed live to its end: the overlay, the sources table, a source marked on the image.
    expect(alice.locator(".status").first).to_have_text("SUCCEEDED", timeout=90_000)
    expect(alice.locator("#attempts li")).to_have_count(1)
    overlay = alice.locator("#overlay")
    expect(overlay).to_be_visible()
    wait_for(lambda: alice.evaluate("document.getElementById('overlay').naturalWidth") > 0, timeout=20,
             what="the overlay to load")
    rows = alice.locator("#sources tbody tr")
    expect(rows).to_have_count(len(STARS))
    alice.get_by_role("button", name="flux").click()
    alice.get_by_role("button", name="flux").click()  # descending: the brightest first
    rows.first.click()
    expect(alice.locator("#marker")).to_be_visible()
    box, mark = overlay.bounding_box(), alice.locator("#marker").bounding_box()
    assert box and mark and box["x"] <= mark["x"] + mark["width"] / 2 <= box["x"] + box["width"]
    shot(alice, "job-sources-detect")

    with alice.expect_download() as download:
        alice.locator("#zip").click()
    names = zipfile.ZipFile(io.BytesIO(Path(download.value.path()).read_bytes())).namelist()
    assert any(n.endswith("overlay.png") for n in names) and any(n.endswith("catalogue.ecsv") for n in names)

    # A longer job: its progress bar moves while it runs (heartbeats carry the progress, the
    # tab's event stream says the job changed), then the page shows its end.
    alice.goto("/submit/sleep")
    alice.locator('input[name="seconds"]').fill("4")
    alice.get_by_role("button", name="Submit").click()
    expect(alice).to_have_url(re.compile(r"/jobs/\d+$"))
    wait_for(lambda: float(alice.locator("#progress").get_attribute("value") or 0) > 0
             if alice.locator("#progress").count() else False, timeout=30, interval=0.2,
             what="the progress bar to move")
    shot(alice, "job-running")
    expect(alice.locator(".status").first).to_have_text("SUCCEEDED", timeout=30_000)

    # The file library shows a quick look of the upload, drawn by a worker (a fits.thumbnail job).
    def thumbnail_shown() -> bool:
        alice.goto("/files")
        return alice.locator("td.thumb img").count() == 1

    wait_for(thumbnail_shown, timeout=60, interval=0.5, what="the uploaded file's thumbnail")
    wait_for(lambda: alice.evaluate("document.querySelector('td.thumb img').naturalWidth") > 0, timeout=20,
             what="the thumbnail to load")
    shot(alice, "files")

    # Another user: the job is a 404 page, the file is not listed; the API agrees.
    bob = sign_in(browser, fleet, "bob@example.org")
    assert bob.goto(job_url).status == 404
    expect(bob.locator("#not-found")).to_be_visible()
    expect(bob.locator("body")).not_to_contain_text("field.fits")
    bob.goto("/files")
    expect(bob.locator("#files")).not_to_contain_text("field.fits")
    shot(bob, "not-found")

    # Signing out ends the session: the job page asks for a sign-in again.
    alice.get_by_role("button", name="Sign out").click()
    expect(alice.locator("h1")).to_have_text("Sign in")
    alice.goto(job_url)
    expect(alice).to_have_url(f"{fleet.url}/login?next=/jobs/{job_id}")


def test_bulk_cancel_and_a_viewer_without_buttons(browser: Browser, fleet: Fleet):
    people(fleet)
    alice = sign_in(browser, fleet, "alice@example.org")
    token = requests.post(f"{fleet.url}/api/auth/login", json={"email": "alice@example.org", "password": PASSWORD},
                          timeout=10).json()["data"]["access_token"]
    for i in range(3):  # no worker runs: they stay pending
        answer = requests.post(f"{fleet.url}/api/jobs", json={"type": "sleep", "input_payload": {"seconds": 30,
                               "tag": str(i)}}, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert answer.status_code == 201
    alice.goto("/jobs?status=PENDING")
    expect(alice.locator("#jobs tbody tr")).to_have_count(3)
    alice.get_by_label("Select all on this page").check()
    alice.once("dialog", lambda dialog: dialog.accept())
    alice.get_by_role("button", name="Cancel selected").click()
    expect(alice.locator("#toast")).to_have_text("3 done.")
    alice.goto("/jobs?status=CANCELLED")
    expect(alice.locator("#jobs tbody tr")).to_have_count(3)
    shot(alice, "jobs")
    alice.set_viewport_size({"width": 390, "height": 844})  # a phone
    scroll_width = alice.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= 390, f"the page is {scroll_width} px wide on a 390 px screen"
    shot(alice, "jobs-phone")

    vera = sign_in(browser, fleet, "vera@example.org")
    expect(vera.locator("#queues")).to_be_visible()
    expect(vera.get_by_role("navigation").get_by_role("link", name="Submit")).to_have_count(0)
    vera.get_by_role("link", name="Fleet", exact=True).click()
    expect(vera.locator("h1")).to_have_text("Fleet")
    expect(vera.locator("form.pool-pin")).to_have_count(0)
    expect(vera.get_by_role("button", name="Redeploy")).to_have_count(0)
    vera.goto("/jobs")
    expect(vera.get_by_role("button", name="Cancel selected")).to_have_count(0)
    shot(vera, "overview-viewer")


def test_an_admin_pins_a_pool_and_sees_the_managers_decision(browser: Browser, fleet: Fleet,
                                                             manager: ManagerProcess):  # noqa: F811
    manager.start()
    wait_for(lambda: requests.get(f"{fleet.url}/api/admin/status", headers=fleet.headers(), timeout=10)
             .json()["data"]["pools"], timeout=30, what="the manager to report its pool")
    admin = sign_in(browser, fleet, "admin@example.org")
    expect(admin.locator("#charts canvas")).to_have_count(4)  # the history charts, drawn by uPlot
    admin.get_by_role("button", name="last week").click()
    expect(admin.locator("#chart-note")).to_have_text("one point per hour")
    shot(admin, "overview-admin")
    admin.get_by_role("link", name="Fleet", exact=True).click()
    pool = admin.locator('article[data-pool="local"]')
    pool.get_by_label("Pin at").fill("1")
    pool.get_by_role("button", name="Pin", exact=True).click()
    expect(pool).to_contain_text("pinned at 1")

    def decided() -> bool:
        admin.reload()
        return "pinned" in admin.locator('article[data-pool="local"] .decisions').inner_text().lower()

    wait_for(decided, timeout=30, interval=0.5, what="the manager's decision after the pin")
    shot(admin, "fleet")
    pool = admin.locator('article[data-pool="local"]')
    pool.get_by_role("button", name="Unpin").click()
    expect(pool).not_to_contain_text("pinned at")
    pool.get_by_label("Max").fill("2")
    pool.get_by_role("button", name="Set bounds").click()
    expect(admin.locator('article[data-pool="local"]')).to_contain_text("bounds 0–2")


def test_dark_mode_follows_the_system_and_the_toggle(browser: Browser, fleet: Fleet):
    people(fleet)
    page = sign_in(browser, fleet, "alice@example.org", color_scheme="dark")
    background = "getComputedStyle(document.body).backgroundColor"
    dark = page.evaluate(background)
    assert dark == "rgb(15, 20, 27)", dark
    shot(page, "overview-dark")
    page.get_by_role("button", name="Toggle dark mode").click()
    assert page.evaluate(background) == "rgb(247, 248, 250)"
    page.reload(wait_until="load")  # the choice is remembered
    wait_for(lambda: page.evaluate(background) == "rgb(247, 248, 250)", timeout=10, what="the light theme")


def test_an_admin_creates_a_viewer_and_disables_a_user(browser: Browser, fleet: Fleet):
    people(fleet)
    bob = sign_in(browser, fleet, "bob@example.org")
    admin = sign_in(browser, fleet, "admin@example.org")
    admin.get_by_role("link", name="Accounts").click()
    form = admin.locator("#new-person")
    form.get_by_label("Email").fill("nova@example.org")
    form.get_by_label("USER").uncheck()
    form.get_by_label("VIEWER").check()
    form.get_by_role("button", name="Create").click()
    created = form.locator("output")
    expect(created).to_contain_text("its password (shown once)")
    password = created.inner_text().rsplit(": ", 1)[1]
    shot(admin, "accounts")

    nova = browser.new_context(base_url=fleet.url).new_page()
    nova.goto("/login")
    nova.get_by_label("Email").fill("nova@example.org")
    nova.get_by_label("Password").fill(password)
    nova.get_by_role("button", name="Sign in").click()
    expect(nova.locator("#queues")).to_be_visible()  # a viewer: the admin views, read-only
    expect(nova.get_by_role("navigation").get_by_role("link", name="Submit")).to_have_count(0)

    admin.reload()
    row = admin.locator("tr", has_text="bob@example.org")
    admin.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Disable").click()
    expect(admin.locator("tr", has_text="bob@example.org")).to_contain_text("disabled")
    bob.goto("/jobs")  # his session ended with the account
    expect(bob.locator("h1")).to_have_text("Sign in")
