"""Print the image's third-party requirements, one a line: setup.cfg's ``install_requires`` and
the client's dependencies (``client/pyproject.toml``), read before the code is copied.

``skyfleet-client`` is left out: it is this repository's ``./client``, which the image installs
from its copy. It is not on PyPI, and pip must never look for it on an index (whoever took the
name there would run code in the image).
"""

from __future__ import annotations

import configparser
import re
import sys
import tomllib
from pathlib import Path

#: Distributions of this repository, never fetched.
LOCAL = frozenset({"skyfleet-client"})


def requirements(root: Path) -> list[str]:
    """The requirements of the main package and of the client, without the local ones."""
    config = configparser.ConfigParser()
    config.read(root / "setup.cfg")
    main = [line.strip() for line in config["options"]["install_requires"].splitlines() if line.strip()]
    client = tomllib.loads((root / "client" / "pyproject.toml").read_text())["project"]["dependencies"]
    found: list[str] = []
    for requirement in [*main, *client]:
        if name(requirement) not in LOCAL and requirement not in found:
            found.append(requirement)
    return found


def name(requirement: str) -> str:
    """The distribution a requirement names, normalised (``Foo_Bar[x]>=1`` → ``foo-bar``)."""
    return re.sub(r"[-_.]+", "-", re.split(r"[\s<>=!~\[;@(]", requirement.strip(), maxsplit=1)[0]).lower()


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd()
    print("\n".join(requirements(root)))
