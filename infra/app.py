"""The CDK app: ``cdk synth`` / ``cdk deploy`` from this directory (see README.md).

The stack name and the target account/region come from context (``stack_name``) and the usual
CDK environment (``CDK_DEFAULT_ACCOUNT`` / ``CDK_DEFAULT_REGION`` from your AWS profile).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import aws_cdk as cdk

# The default pools read the job-type catalogue, so the repository root must be importable even
# when the project is not installed into this interpreter.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from skyfleet_infra.settings import load_settings
from skyfleet_infra.stack import SkyfleetStack

STACK_NAME = "skyfleet"


def main() -> None:
    """Synthesise the stack into cdk.out."""
    app = cdk.App()
    settings = load_settings(app.node.try_get_context)
    name = app.node.try_get_context("stack_name") or STACK_NAME
    env = cdk.Environment(account=os.environ.get("CDK_DEFAULT_ACCOUNT"), region=os.environ.get("CDK_DEFAULT_REGION"))
    SkyfleetStack(app, name, settings=settings, env=env, description="skyfleet: Postgres-as-queue worker fleet")
    app.synth()


if __name__ == "__main__":
    main()
