"""The saved login of the command line: the API's URL and a refresh token, mode 0600.

Kept at ``$XDG_CONFIG_HOME/skyfleet/credentials.json`` (``~/.config/skyfleet/…``); every
renewal rotates the refresh token and the new one replaces the old one in the file.
``SKYFLEET_URL`` and ``SKYFLEET_TOKEN`` (an access token) override what is saved.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8000"


def path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "skyfleet" / "credentials.json"


@dataclass(frozen=True)
class Saved:
    url: str
    refresh_token: str | None


def load() -> Saved:
    try:
        data = json.loads(path().read_text())
    except (OSError, ValueError):
        data = {}
    return Saved(str(data.get("url") or DEFAULT_URL), data.get("refresh_token"))


def save(url: str, refresh_token: str | None) -> None:
    """Write the file with mode 0600 from its creation (never readable by others, even briefly)."""
    target = path()
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"url": url, "refresh_token": refresh_token}, out)
    os.chmod(target, 0o600)


def forget() -> None:
    path().unlink(missing_ok=True)
