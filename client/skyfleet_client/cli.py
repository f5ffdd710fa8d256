"""``skyfleet``: the command line on the client; ``skyfleet run`` and ``skyfleet migrate`` hand
over to the fleet's own ``api.cli`` when the skyfleet package is installed beside it.

Exit codes: 0 done; 1 a job did not succeed; 2 bad usage or input (the field is named); 3 not
found; 4 not signed in or not allowed; 5 conflict or limit; 6 the API is unavailable.
Errors are one line on stderr, never a traceback. ``-o json`` on every read, for scripts.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn
from rich.table import Table

from skyfleet_client import Client, credentials, errors

OK, JOB_FAILED, BAD_INPUT, NOT_FOUND, NOT_ALLOWED, CONFLICT, UNAVAILABLE = range(7)
#: The exit code of each error (the first that matches); any other is BAD_INPUT.
_CODES: list[tuple[type[errors.SkyfleetError], int]] = [
    (errors.JobFailed, JOB_FAILED), (errors.ValidationFailed, BAD_INPUT), (errors.NotFound, NOT_FOUND),
    (errors.Unauthorized, NOT_ALLOWED), (errors.Forbidden, NOT_ALLOWED), (errors.CredentialsRefused, NOT_ALLOWED),
    (errors.Conflict, CONFLICT), (errors.LimitExceeded, CONFLICT), (errors.Unavailable, UNAVAILABLE)]

out = Console()
err = Console(stderr=True)


def _client(ctx: click.Context) -> Client:
    """A client from SKYFLEET_TOKEN, or the saved login (whose rotations are saved back)."""
    saved = credentials.load()
    url = os.environ.get("SKYFLEET_URL") or saved.url
    token = os.environ.get("SKYFLEET_TOKEN")
    if token:
        client = Client(url, token=token)
    elif saved.refresh_token:
        client = Client(url, refresh_token=saved.refresh_token,
                        on_refresh=lambda fresh: credentials.save(url, fresh))
    else:
        raise click.UsageError("not signed in: run `skyfleet login` (or set SKYFLEET_TOKEN)")
    ctx.call_on_close(client.close)
    return client


def _emit(data: Any, output: str, table: Table | None = None) -> None:
    if output == "json" or table is None:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        out.print(table)


class Cli(click.Group):
    """Turns the client's errors into one line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except errors.SkyfleetError as exc:
            fields = exc.fields if isinstance(exc, errors.ValidationFailed) else {}
            detail = "; ".join(f"{f}: {' '.join(m)}" for f, m in fields.items())
            err.print(f"skyfleet: {exc.code}: {detail or exc.message}", markup=False, highlight=False)
            ctx.exit(next((code for kind, code in _CODES if isinstance(exc, kind)), BAD_INPUT))


OUTPUT = click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)


@click.group(cls=Cli)
def cli() -> None:
    """The skyfleet command line: submit and follow jobs, manage files and the fleet; with the
    skyfleet package installed, also `run` (a local fleet) and `migrate`."""


def _server(command: str) -> int:
    """A command of the fleet itself (``api.cli``), which needs the skyfleet package installed."""
    try:
        from api.cli import main as server_main  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise click.UsageError(f"`skyfleet {command}` needs the skyfleet server package (`make install`)") from None
    code: int = server_main([command])
    return code


@cli.command()
@click.pass_context
def run(ctx: click.Context) -> None:
    """Start a whole fleet on this machine: the embedded PostgreSQL (unless DATABASE_URL), the
    API with the console, and the manager with its local workers."""
    ctx.exit(_server("run"))


@cli.command()
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Apply the database migrations to DATABASE_URL."""
    ctx.exit(_server("migrate"))


@cli.command()
@click.option("--url", default=lambda: os.environ.get("SKYFLEET_URL") or credentials.load().url, show_default=True)
@click.option("--email", prompt=True)
@click.password_option(confirmation_prompt=False)
def login(url: str, email: str, password: str) -> None:
    """Sign in; the refresh token is saved (mode 0600) for the next commands."""
    with Client(url, email=email, password=password) as client:
        client.session.login()
        credentials.save(url, client.session.refresh_token)
        me = client.me()
    click.echo(f"signed in to {url} as {me['email']} ({', '.join(me['roles'])}); saved in {credentials.path()}")


@cli.command()
def logout() -> None:
    """Forget the saved login."""
    credentials.forget()


def _parse_params(params: tuple[str, ...]) -> dict[str, Any]:
    """``-p key=value`` pairs; each value read as JSON when it is JSON (numbers, booleans, lists)."""
    payload: dict[str, Any] = {}
    for item in params:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: expected key=value", param_hint="-p")
        try:
            payload[key] = json.loads(raw)
        except ValueError:
            payload[key] = raw
    return payload


@cli.command()
@click.argument("job_type")
@click.option("-p", "--param", "params", multiple=True, help="key=value (the value as JSON when it is JSON)")
@click.option("--input", "input_file", type=click.File("r"), help="the input as a JSON file")
@click.option("--file", "upload", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="upload this file and name it as the input's `file`")
@click.option("--priority", type=int)
@click.option("--no-cache", is_flag=True, help="run anew even if an identical job succeeded")
@click.option("--wait", is_flag=True, help="wait for the job to end")
@click.option("--watch", is_flag=True, help="wait, showing its progress")
@click.option("--download", "download_dir", type=click.Path(file_okay=False, path_type=Path),
              help="then download its outputs here")
@OUTPUT
@click.pass_context
def submit(ctx: click.Context, job_type: str, params: tuple[str, ...], input_file: Any, upload: Path | None,
           priority: int | None, no_cache: bool, wait: bool, watch: bool, download_dir: Path | None,
           output: str) -> None:
    """Submit a job of JOB_TYPE."""
    client = _client(ctx)
    payload = json.load(input_file) if input_file else {}
    payload |= _parse_params(params)
    if upload is not None:
        payload["file"] = {"file_id": client.files.upload(upload)["id"]}
    job = client.jobs.submit(job_type, payload, priority=priority, cache=False if no_cache else None)
    if watch:
        _watch(client, [job.id])
    elif wait or download_dir:
        job.wait()
    if download_dir:
        for path in job.download(download_dir):
            click.echo(str(path), err=output == "json")
    _emit(job.refresh().data if (wait or watch or download_dir) else job.data, output, _job_table([job.data]))


@cli.command(name="submit-many")
@click.argument("jsonl", type=click.File("r"))
@OUTPUT
@click.pass_context
def submit_many(ctx: click.Context, jsonl: Any, output: str) -> None:
    """Submit the jobs of a JSON Lines file (one ``POST /api/jobs`` body per line), in batches,
    with a progress bar; prints the job ids (all of them with ``-o json``)."""
    bodies = []
    for number, line in enumerate(jsonl, 1):
        if line.strip():
            try:
                bodies.append(json.loads(line))
            except ValueError as exc:
                raise click.BadParameter(f"line {number}: not JSON ({exc})", param_hint="JSONL") from None
    ids: list[int] = []
    with Progress(TextColumn("submitting"), BarColumn(), TaskProgressColumn(), console=err) as bars:
        task = bars.add_task("", total=len(bodies))
        for job in _client(ctx).jobs.submit_many(bodies):
            ids.append(job.id)
            bars.update(task, completed=len(ids))
    if output == "json":
        _emit(ids, "json")
    else:
        click.echo(f"{len(ids)} jobs submitted: {ids[0]}…{ids[-1]}" if ids else "no jobs in the file")


def _job_table(rows: list[dict[str, Any]]) -> Table:
    table = Table("id", "type", "status", "attempt", "created", "error")
    for j in rows:
        table.add_row(str(j["id"]), j["type"], j["status"], f"{j['attempt']}/{j['max_attempts']}",
                      str(j["created_at"])[:19], (j.get("error") or {}).get("message", ""))
    return table


def _watch(client: Client, ids: list[int]) -> int:
    """A progress bar per job from its event stream; the jobs that did not succeed."""
    failed = 0
    with Progress(TextColumn("job {task.fields[job]}"), BarColumn(), TaskProgressColumn(),
                  TextColumn("{task.fields[status]}"), console=err) as bars:
        for job_id in ids:
            job = client.jobs.get(job_id)
            task = bars.add_task("", total=100, job=job_id, status=job.status)
            for event, data in job.events():
                if event == "progress" and data.get("percent") is not None:
                    bars.update(task, completed=data["percent"], status=data.get("stage") or job.status)
                elif "status" in data:
                    bars.update(task, status=data["status"])
            if job.status == "SUCCEEDED":
                bars.update(task, completed=100, status="SUCCEEDED")
            else:
                failed += 1
                error = (job.data.get("error") or {}).get("message", "")
                bars.update(task, status=f"{job.status} {error}".strip())
    return failed


@cli.command()
@click.argument("job_ids", nargs=-1, type=int, required=True)
@click.pass_context
def watch(ctx: click.Context, job_ids: tuple[int, ...]) -> None:
    """Follow jobs to their end with a progress bar each; exit 1 if any did not succeed."""
    if _watch(_client(ctx), list(job_ids)):
        ctx.exit(JOB_FAILED)


@cli.command(name="list")
@click.option("--status")
@click.option("--type", "job_type")
@click.option("-q", "--query", help="text in the input or the error")
@click.option("--limit", type=int, default=50, show_default=True)
@OUTPUT
@click.pass_context
def list_jobs(ctx: click.Context, status: str | None, job_type: str | None, query: str | None, limit: int,
              output: str) -> None:
    """Your jobs, newest first."""
    rows = []
    for job in _client(ctx).jobs.list(status=status, type=job_type, q=query, page_size=min(limit, 100)):
        rows.append(job.data)
        if len(rows) >= limit:
            break
    _emit(rows, output, _job_table(rows))


@cli.command()
@click.argument("job_id", type=int)
@OUTPUT
@click.pass_context
def show(ctx: click.Context, job_id: int, output: str) -> None:
    """One job."""
    job = _client(ctx).jobs.get(job_id)
    _emit(job.data, output, _job_table([job.data]))


@cli.command()
@click.argument("job_id", type=int)
@click.pass_context
def result(ctx: click.Context, job_id: int) -> None:
    """A job's result (JSON)."""
    _emit(_client(ctx).jobs.result(job_id), "json")


@cli.command()
@click.argument("job_id", type=int)
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), default=".")
@click.option("--zip", "as_zip", is_flag=True, help="one zip (DIRECTORY/job-ID.zip)")
@click.pass_context
def download(ctx: click.Context, job_id: int, directory: Path, as_zip: bool) -> None:
    """Download a job's outputs (each checked against its SHA-256)."""
    job = _client(ctx).jobs.get(job_id)
    if as_zip:
        directory.mkdir(parents=True, exist_ok=True)
        click.echo(str(job.download_zip(directory / f"job-{job_id}.zip")))
    else:
        for path in job.download(directory):
            click.echo(str(path))


@cli.command()
@click.argument("job_ids", nargs=-1, type=int, required=True)
@click.pass_context
def cancel(ctx: click.Context, job_ids: tuple[int, ...]) -> None:
    """Cancel jobs."""
    client = _client(ctx)
    for job_id in job_ids:
        click.echo(f"{job_id} {client.jobs.cancel(job_id).status}")


@cli.command()
@click.argument("job_ids", nargs=-1, type=int, required=True)
@click.pass_context
def rm(ctx: click.Context, job_ids: tuple[int, ...]) -> None:
    """Delete finished jobs and their outputs."""
    client = _client(ctx)
    for job_id in job_ids:
        client.jobs.delete(job_id)
        click.echo(f"{job_id} deleted")


@cli.command()
@OUTPUT
@click.pass_context
def types(ctx: click.Context, output: str) -> None:
    """The job types and their inputs."""
    catalogue = _client(ctx).job_types()
    table = Table("type", "inputs (default)", "description")
    for t in catalogue:
        props = t["input_schema"].get("properties", {})
        inputs = ", ".join(f"{k} ({p['default']})" if p.get("default") is not None else k for k, p in props.items())
        table.add_row(t["name"], inputs, t["description"])
    _emit(catalogue, output, table)


@cli.group()
def files() -> None:
    """Your library of FITS files."""


@files.command(name="upload")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.pass_context
def files_upload(ctx: click.Context, paths: tuple[Path, ...]) -> None:
    """Upload files, with a progress bar."""
    client = _client(ctx)
    with Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), console=err) as bars:
        for path in paths:
            task = bars.add_task(path.name, total=path.stat().st_size)

            def moved(sent: int, _total: int, task: TaskID = task) -> None:
                bars.update(task, completed=sent)

            record = client.files.upload(path, progress=moved)
            click.echo(f"{record['id']} {record['name']}")


@files.command(name="list")
@OUTPUT
@click.pass_context
def files_list(ctx: click.Context, output: str) -> None:
    """Your files."""
    rows = list(_client(ctx).files.list())
    table = Table("id", "name", "size", "sha256")
    for f in rows:
        table.add_row(str(f["id"]), f["name"], str(f["size"]), f["sha256"][:16])
    _emit(rows, output, table)


@files.command(name="rm")
@click.argument("file_ids", nargs=-1, type=int, required=True)
@click.pass_context
def files_rm(ctx: click.Context, file_ids: tuple[int, ...]) -> None:
    """Delete files (refused while a job reads one)."""
    client = _client(ctx)
    for file_id in file_ids:
        client.files.delete(file_id)
        click.echo(f"{file_id} deleted")


@cli.group()
def admin() -> None:
    """The fleet (admins; viewers read)."""


@admin.command(name="queues")
@click.pass_context
def admin_queues(ctx: click.Context) -> None:
    _emit(_client(ctx).queues(), "json")


@admin.command(name="status")
@click.pass_context
def admin_status(ctx: click.Context) -> None:
    _emit(_client(ctx).status(), "json")


@admin.command(name="workers")
@click.pass_context
def admin_workers(ctx: click.Context) -> None:
    _emit(list(_client(ctx).workers()), "json")


@admin.command(name="scale")
@click.argument("pool")
@click.option("--count", type=int)
@click.option("--min", "low", type=int)
@click.option("--max", "high", type=int)
@click.option("--unpin", is_flag=True)
@click.pass_context
def admin_scale(ctx: click.Context, pool: str, count: int | None, low: int | None, high: int | None,
                unpin: bool) -> None:
    """Pin a pool (--count), unpin it, or override its bounds."""
    changes: dict[str, Any] = {k: v for k, v in (("count", count), ("min", low), ("max", high)) if v is not None}
    if unpin:
        changes["count"] = None
    if not changes:
        raise click.UsageError("give --count, --unpin, --min or --max")
    _emit(_client(ctx).scale(pool, **changes), "json")


@admin.command(name="redeploy")
@click.argument("pool")
@click.pass_context
def admin_redeploy(ctx: click.Context, pool: str) -> None:
    _emit(_client(ctx).redeploy(pool), "json")


def main(argv: list[str] | None = None) -> int:
    """The entry point; the exit code."""
    try:
        # Without standalone mode click returns an exit's code (and a command's return value).
        code = cli.main(args=argv, prog_name="skyfleet", standalone_mode=False)
    except click.exceptions.Exit as done:
        return int(done.exit_code)
    except click.ClickException as exc:
        exc.show()
        return BAD_INPUT
    except click.Abort:
        return BAD_INPUT
    return code if isinstance(code, int) else OK


if __name__ == "__main__":
    sys.exit(main())
