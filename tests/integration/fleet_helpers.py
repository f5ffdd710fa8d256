"""Shared by the fleet tests: a manager account, pool reports, workers registered into pools."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flask import Flask

from api.auth import service as accounts
from api.auth.models import Role
from tests.integration.conftest import As, make_account


def manager_account(app: Flask, name: str = "mgr") -> As:
    return make_account(app, accounts.service_email(name), [Role.MANAGER], is_service=True)


def pool_config(name: str = "p", job_types: Sequence[str] = ("sleep",), low: Any = 0, high: Any = 10,
                **extra: Any) -> dict[str, Any]:
    """A pool as the manager reports it (``low``/``high`` untyped on purpose: tests send bad ones)."""
    return {"name": name, "job_types": list(job_types), "backend": "local", "min": low, "max": high,
            "jobs_per_worker": 2, "details": {"command": ["python", "-m", "worker"]}} | extra


def report_pools(who: As, *pools: dict[str, Any]) -> list[dict[str, Any]]:
    response = who.client.put("/api/manager/pools", json={"pools": list(pools)},
                              headers={"Authorization": f"Bearer {who.token}"})
    body: dict[str, Any] = response.json or {}
    assert response.status_code == 200, body
    return list(body["data"]["pools"])


def join_pool(worker: As, pool: str | None, name: str = "w", types: tuple[str, ...] = ("sleep",),
              revision: str | None = "r1", launch_id: str | None = None) -> int:
    """Register a worker through the worker endpoint, with the attributes the manager reads."""
    attributes = None if pool is None else {"pool": pool, "revision": revision, "launch_id": launch_id or name}
    response = worker.post("/api/workers", {"name": name, "job_types": list(types), "concurrency": 2,
                                            "hostname": "host-1", "pid": 4242, "attributes": attributes})
    assert response.status_code == 201, response.json
    return int(response.json["data"]["id"])


def status(admin: As) -> dict[str, Any]:
    response = admin.get("/api/admin/status")
    assert response.status_code == 200, response.json
    return dict(response.json["data"])


def pool_status(admin: As, name: str = "p") -> dict[str, Any]:
    return next(p for p in status(admin)["pools"] if p["name"] == name)


def decision(pool: str = "p", desired: int = 1, previous: int = 0, action: str = "scale_out",
             reason: str = "2 pending, 0 running", **inputs: Any) -> dict[str, Any]:
    return {"pool": pool, "desired": desired, "previous": previous, "action": action, "reason": reason,
            "inputs": {"pending": 2, "in_progress": 0, "running": 0, "starting": 0, "draining": 0} | inputs,
            "observed": {"cluster": "arn:aws:ecs:eu-west-1:1:cluster/c", "task_definition": "worker:7"}}
