"""The skyfleet AWS CDK app's constructs; the stack is ``skyfleet_infra.stack.SkyfleetStack``.

Nothing is imported here, so ``skyfleet_infra.settings`` works without aws-cdk-lib installed.
"""
