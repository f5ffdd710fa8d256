"""Where this worker runs on ECS: its task and cluster ARNs, from the task metadata endpoint v4."""

from __future__ import annotations

import logging

import requests

log = logging.getLogger(__name__)

METADATA_TIMEOUT_S = 2.0


def task_identity(metadata_uri: str | None) -> dict[str, str | None]:
    """``{"ecs_task_arn", "ecs_cluster_arn"}`` from ``$ECS_CONTAINER_METADATA_URI_V4/task``.

    Off ECS (no URI) both are None; an unreachable endpoint is logged and also gives None,
    so a worker still starts (the manager then matches it by its launch id instead).
    """
    empty: dict[str, str | None] = {"ecs_task_arn": None, "ecs_cluster_arn": None}
    if not metadata_uri:
        return empty
    try:
        response = requests.get(f"{metadata_uri.rstrip('/')}/task", timeout=METADATA_TIMEOUT_S)
        response.raise_for_status()
        task = response.json()
    except (requests.RequestException, ValueError) as exc:
        log.warning("ECS task metadata unavailable at %s: %s", metadata_uri, exc)
        return empty
    return {"ecs_task_arn": task.get("TaskARN"), "ecs_cluster_arn": task.get("Cluster")}
