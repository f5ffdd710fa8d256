"""The CDK stack, synthesised once in-process (no CDK CLI, no AWS account) and checked resource by resource.

Skipped when the ``infra`` extra (aws-cdk-lib, cfn-lint) is not installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api.config import load_settings as load_api_settings

# jsii's node runtime prints a banner for node versions near end of life; it says nothing about us.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "18,20")
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
cdk = pytest.importorskip("aws_cdk")
assertions = pytest.importorskip("aws_cdk.assertions")

INFRA = Path(__file__).resolve().parents[2] / "infra"
sys.path.insert(0, str(INFRA))

from skyfleet_infra.secrets import JWT_KEY_HANDLER
from skyfleet_infra.settings import load_settings
from skyfleet_infra.stack import SkyfleetStack

STACK = "skyfleet"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The synthesised template with the default context (default pools, HTTP, image from the Dockerfile)."""
    app = cdk.App(outdir=str(tmp_path_factory.mktemp("cdk.out")))
    stack = SkyfleetStack(app, STACK, settings=load_settings(app.node.try_get_context))
    return dict(assertions.Template.from_stack(stack).to_json())


def render(value: Any) -> Any:
    """Intrinsics as readable strings: Ref X → <X>, GetAtt X.Y → <X.Y>, Fn::Join joined; lists and dicts kept."""
    if isinstance(value, dict) and len(value) == 1:
        (key, arg), = value.items()
        if key == "Ref":
            return f"<{arg}>"
        if key == "Fn::GetAtt":
            return f"<{arg[0]}.{arg[1]}>"
        if key == "Fn::Join":
            return arg[0].join(str(render(part)) for part in arg[1])
    if isinstance(value, dict):
        return {k: render(v) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v) for v in value]
    return value


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r["Properties"] for name, r in template["Resources"].items() if r["Type"] == kind}


def only(template: dict[str, Any], kind: str) -> tuple[str, dict[str, Any]]:
    found = resources(template, kind)
    assert len(found) == 1, f"expected one {kind}, found {sorted(found)}"
    return next(iter(found.items()))


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements_of_role(template: dict[str, Any], role: str) -> Iterator[dict[str, Any]]:
    """Every statement of the inline policies attached to ``role`` (a logical id), rendered."""
    for policy in resources(template, "AWS::IAM::Policy").values():
        if {"Ref": role} in policy.get("Roles", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                yield render(statement)
    for inline in resources(template, "AWS::IAM::Role")[role].get("Policies", []):
        yield from (render(s) for s in inline["PolicyDocument"]["Statement"])


def task_definitions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {props["Family"]: props for props in resources(template, "AWS::ECS::TaskDefinition").values()}


def role_of(task_definition: dict[str, Any], key: str = "TaskRoleArn") -> str:
    return str(task_definition[key]["Fn::GetAtt"][0])


def worker_families(template: dict[str, Any]) -> list[str]:
    return sorted(f for f in task_definitions(template) if f.startswith(f"{STACK}-worker-"))


# -- database ---------------------------------------------------------------------------------------------

def test_database_is_private_encrypted_postgres_16_with_secret_credentials(template):
    _, db = only(template, "AWS::RDS::DBInstance")
    assert db["PubliclyAccessible"] is False
    assert db["StorageEncrypted"] is True
    assert db["Engine"] == "postgres" and int(str(db["EngineVersion"]).split(".")[0]) >= 16
    assert db["MasterUsername"] == "skyfleet"
    assert "{{resolve:secretsmanager:" in render(db["MasterUserPassword"])
    secret_ref = render(db["MasterUserPassword"]).split("{{resolve:secretsmanager:")[1].split(":SecretString")[0]
    assert secret_ref.strip("<>") in resources(template, "AWS::SecretsManager::Secret")
    _, subnet_group = only(template, "AWS::RDS::DBSubnetGroup")
    subnets = [render(s).strip("<>") for s in subnet_group["SubnetIds"]]
    assert subnets and all("database" in s for s in subnets)
    # Isolated: no route out of the database subnets at all.
    routes = resources(template, "AWS::EC2::Route")
    tables = {render(a["RouteTableId"]) for a in resources(template, "AWS::EC2::SubnetRouteTableAssociation").values()
              if render(a["SubnetId"]).strip("<>") in subnets}
    assert tables and not [r for r in routes.values() if render(r["RouteTableId"]) in tables]


def test_database_admits_only_the_api_security_group(template):
    _, db = only(template, "AWS::RDS::DBInstance")
    db_groups = {render(g).split(".")[0].strip("<") for g in db["VPCSecurityGroups"]}
    ingress = [render(r) for r in resources(template, "AWS::EC2::SecurityGroupIngress").values()
               if render(r["GroupId"]).split(".")[0].strip("<") in db_groups]
    inline = [rule for name in db_groups
              for rule in resources(template, "AWS::EC2::SecurityGroup")[name].get("SecurityGroupIngress", [])]
    assert not inline
    assert len(ingress) == 1
    assert ingress[0]["FromPort"] == ingress[0]["ToPort"] == 5432
    source = ingress[0]["SourceSecurityGroupId"].split(".")[0].strip("<")
    services = resources(template, "AWS::ECS::Service")
    api = next(s for s in services.values() if s.get("LoadBalancers"))
    api_groups = {render(g).split(".")[0].strip("<")
                  for g in api["NetworkConfiguration"]["AwsvpcConfiguration"]["SecurityGroups"]}
    assert api_groups == {source}


# -- bucket -----------------------------------------------------------------------------------------------

def test_bucket_is_private_encrypted_tls_only_with_lifecycle_rules(template):
    _, bucket = only(template, "AWS::S3::Bucket")
    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
    encryption = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
    rules = bucket["LifecycleConfiguration"]["Rules"]
    expiring = [r for r in rules if r.get("Prefix") == "jobs/" and r.get("ExpirationInDays")]
    assert expiring and expiring[0]["ExpirationInDays"] == 30 and expiring[0]["Status"] == "Enabled"
    assert any(r.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation") for r in rules)
    assert not any(r.get("ExpirationInDays") for r in rules if r.get("Prefix", "") in ("", "uploads/"))
    _, policy = only(template, "AWS::S3::BucketPolicy")
    denies = [s for s in policy["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
    assert any(s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} for s in denies)


# -- API --------------------------------------------------------------------------------------------------

def test_alb_health_check_is_api_health(template):
    _, group = only(template, "AWS::ElasticLoadBalancingV2::TargetGroup")
    assert group["HealthCheckPath"] == "/api/health"
    assert group["TargetType"] == "ip"
    api = next(s for s in resources(template, "AWS::ECS::Service").values() if s.get("LoadBalancers"))
    (target,) = api["LoadBalancers"]
    assert target["ContainerPort"] == 8000 and target["ContainerName"] == "api"
    _, lb = only(template, "AWS::ElasticLoadBalancingV2::LoadBalancer")
    assert lb["Scheme"] == "internet-facing"
    assert all("public" in render(s) for s in lb["Subnets"])


def test_api_gets_its_settings_and_secrets_but_no_password_in_plain_text(template):
    api = task_definitions(template)[f"{STACK}-api"]
    (container,) = api["ContainerDefinitions"]
    env = {e["Name"]: render(e["Value"]) for e in container["Environment"]}
    secrets = {s["Name"] for s in container["Secrets"]}
    assert {"SKYFLEET_DB_USER", "SKYFLEET_DB_PASSWORD", "SKYFLEET_JWT_PRIVATE_KEY"} <= secrets
    assert env["SKYFLEET_STORAGE_BACKEND"] == "s3" and env["SKYFLEET_S3_BUCKET"].startswith("<")
    assert env["SKYFLEET_TRUSTED_PROXY_HOPS"] == "1"
    assert not [name for name in env if "PASSWORD" in name or name in ("DATABASE_URL", "SKYFLEET_JWT_PRIVATE_KEY")]
    assert container["Command"][0] == "gunicorn"
    # The signing key is written into its secret before the first API task starts.
    (key_value,) = [n for n, r in template["Resources"].items() if r["Type"] == "AWS::CloudFormation::CustomResource"]
    api_service = next(n for n, r in template["Resources"].items()
                       if r["Type"] == "AWS::ECS::Service" and r["Properties"].get("LoadBalancers"))
    assert key_value in template["Resources"][api_service]["DependsOn"]


def test_jwt_key_handler_writes_a_key_the_api_accepts(template, tmp_path):
    """Run the custom resource's inline handler under node, with a stand-in for the AWS SDK."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    (key_value,) = [r["Properties"] for r in template["Resources"].values()
                    if r["Type"] == "AWS::CloudFormation::CustomResource"]
    sdk = tmp_path / "node_modules" / "@aws-sdk" / "client-secrets-manager"
    sdk.mkdir(parents=True)
    (sdk / "index.js").write_text(
        "class PutSecretValueCommand { constructor(input) { this.input = input; } }\n"
        "class SecretsManagerClient { async send(c) { require('fs').appendFileSync(process.env.OUT,"
        " JSON.stringify(c.input) + '\\n'); return {}; } }\n"
        "module.exports = { SecretsManagerClient, PutSecretValueCommand };\n")
    (tmp_path / "index.js").write_text(JWT_KEY_HANDLER)
    (tmp_path / "run.js").write_text(
        "const h = require('./index.js');\n"
        "const props = { SecretArn: 'arn:aws:secretsmanager:eu-west-1:1:secret:k', Bits: process.env.BITS };\n"
        "(async () => {\n"
        "  const created = await h.handler({ RequestType: 'Create', ResourceProperties: props });\n"
        "  await h.handler({ RequestType: 'Update', PhysicalResourceId: created.PhysicalResourceId,"
        " ResourceProperties: props });\n"
        "  console.log(created.PhysicalResourceId);\n"
        "})();\n")
    out = tmp_path / "calls.jsonl"
    result = subprocess.run([node, "run.js"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={"PATH": os.environ.get("PATH", ""), "OUT": str(out), "BITS": key_value["Bits"]},
                            check=False)
    assert result.returncode == 0, result.stderr
    calls = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(calls) == 1  # Create writes a key; Update leaves it alone
    assert calls[0]["SecretId"].endswith(":secret:k")
    # The API's own check: ConfigError unless a PEM RSA key of at least 2048 bits without a passphrase.
    load_api_settings({"DATABASE_URL": "postgresql://db/skyfleet", "SKYFLEET_JWT_PRIVATE_KEY": calls[0]["SecretString"]})
    assert "BEGIN PRIVATE KEY" in calls[0]["SecretString"] and key_value["Bits"] == "3072"


def test_tasks_run_in_private_subnets_without_public_addresses(template):
    for service in resources(template, "AWS::ECS::Service").values():
        network = service["NetworkConfiguration"]["AwsvpcConfiguration"]
        assert network["AssignPublicIp"] == "DISABLED"
        assert all("tasks" in render(s) for s in network["Subnets"])


# -- manager ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def manager_statements(template: dict[str, Any]) -> list[dict[str, Any]]:
    manager = task_definitions(template)[f"{STACK}-manager"]
    return list(statements_of_role(template, role_of(manager)))


def _statements_with(statements: list[dict[str, Any]], action: str) -> list[dict[str, Any]]:
    return [s for s in statements if action in as_list(s["Action"])]


def test_manager_runs_only_the_worker_task_definitions(template, manager_statements):
    (run,) = _statements_with(manager_statements, "ecs:RunTask")
    families = {r.rsplit("task-definition/", 1)[1] for r in as_list(run["Resource"])}
    assert families == {f"{f}:*" for f in worker_families(template)}
    assert len(families) == 2  # the default pools: general and large
    assert run["Condition"]["ArnEquals"]["ecs:cluster"].startswith("<Cluster")


def test_manager_stops_describes_and_lists_tasks_of_its_cluster_only(manager_statements):
    for action in ("ecs:StopTask", "ecs:DescribeTasks", "ecs:ListTasks"):
        (statement,) = _statements_with(manager_statements, action)
        assert statement["Condition"]["ArnEquals"]["ecs:cluster"].startswith("<Cluster"), action
        for resource in as_list(statement["Resource"]):
            assert resource == "*" and action == "ecs:ListTasks" or ":task/<Cluster" in resource, (action, resource)


def test_manager_has_no_unconditioned_wildcard_ecs_access(manager_statements):
    for statement in manager_statements:
        actions = as_list(statement["Action"])
        assert not [a for a in actions if a.endswith("*")], actions
        if "*" in as_list(statement["Resource"]) and any(a.startswith("ecs:") for a in actions):
            # Only what AWS offers no resource-level permission for, and that pinned to the cluster if it can be.
            assert set(actions) <= {"ecs:ListTasks", "ecs:DescribeTaskDefinition"}, actions
            if "ecs:ListTasks" in actions:
                assert "ecs:cluster" in statement["Condition"]["ArnEquals"]
    assert {a for s in manager_statements for a in as_list(s["Action"]) if not a.startswith(("ecs:", "iam:"))} == set()


def test_manager_passes_only_the_worker_roles(template, manager_statements):
    (passing,) = _statements_with(manager_statements, "iam:PassRole")
    definitions = task_definitions(template)
    expected = {f"<{role_of(definitions[f], key)}.Arn>" for f in worker_families(template)
                for key in ("TaskRoleArn", "ExecutionRoleArn")}
    assert set(as_list(passing["Resource"])) == expected
    assert passing["Condition"] == {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}


def test_manager_is_told_its_pools(template):
    manager = task_definitions(template)[f"{STACK}-manager"]
    (container,) = manager["ContainerDefinitions"]
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    # The JSON is a Fn::Join around tokens; render the tokens as plain strings, then parse it.
    pools = json.loads(render(env["SKYFLEET_MANAGER_POOLS"]))
    assert [p["name"] for p in pools] == ["general", "large"]
    definitions = {name: props["Family"]
                   for name, props in resources(template, "AWS::ECS::TaskDefinition").items()}
    for pool in pools:
        assert pool["backend"] == "ecs" and pool["min"] <= pool["max"] and pool["job_types"]
        assert definitions[pool["task_definition"].strip("<>")] == f"{STACK}-worker-{pool['name']}"
        assert pool["container"] == "worker" and pool["launch_type"] == "FARGATE"
        assert pool["cluster"].startswith("<Cluster") and pool["subnets"] and pool["security_groups"]
        assert pool["assign_public_ip"] is False
    assert "image.mosaic" in pools[1]["job_types"] and "image.mosaic" not in pools[0]["job_types"]
    services = resources(template, "AWS::ECS::Service")
    manager_service = next(s for s in services.values() if not s.get("LoadBalancers"))
    assert manager_service["DesiredCount"] == 1


def test_manager_accepts_the_pools_it_is_given(template):
    """The JSON goes through the manager's own parser (manager/config.py), so the two cannot drift."""
    manager_config = pytest.importorskip("manager.config")
    (container,) = task_definitions(template)[f"{STACK}-manager"]["ContainerDefinitions"]
    env = {e["Name"]: render(e["Value"]) for e in container["Environment"]}
    pools = manager_config.load_pools({"SKYFLEET_MANAGER_POOLS": env["SKYFLEET_MANAGER_POOLS"]})
    assert [(p.name, p.backend, p.ecs.container) for p in pools] == [("general", "ecs", "worker"),
                                                                      ("large", "ecs", "worker")]


# -- workers ----------------------------------------------------------------------------------------------

def test_worker_roles_reach_only_their_prefixes(template):
    bucket, _ = only(template, "AWS::S3::Bucket")
    jobs, uploads = f"<{bucket}.Arn>/jobs/*", f"<{bucket}.Arn>/uploads/*"
    for family in worker_families(template):
        statements = list(statements_of_role(template, role_of(task_definitions(template)[family])))
        assert statements, family
        for statement in statements:
            actions = set(as_list(statement["Action"]))
            assert all(a.startswith("s3:") and "*" not in a for a in actions), (family, actions)
            granted = set(as_list(statement["Resource"]))
            if actions == {"s3:ListBucket"}:
                assert granted == {f"<{bucket}.Arn>"}
                assert statement["Condition"]["StringLike"]["s3:prefix"] == ["jobs/*", "uploads/*"]
            elif actions & {"s3:PutObject", "s3:DeleteObject"}:
                assert granted == {jobs}, (family, statement)
            else:
                assert granted <= {jobs, uploads} and actions == {"s3:GetObject"}, (family, statement)
        readable = {r for s in statements if "s3:GetObject" in as_list(s["Action"]) for r in as_list(s["Resource"])}
        assert readable == {jobs, uploads}


def test_workers_drain_on_sigterm_and_know_their_pool(template):
    for family in worker_families(template):
        (container,) = task_definitions(template)[family]["ContainerDefinitions"]
        env = {e["Name"]: render(e["Value"]) for e in container["Environment"]}
        assert container["StopTimeout"] == 120
        assert float(env["SKYFLEET_WORKER_STOP_GRACE_S"]) < container["StopTimeout"]
        assert env["SKYFLEET_WORKER_POOL"] == family.rsplit("-", 1)[1]
        assert env["SKYFLEET_API_URL"].startswith("http://api.")
        assert [s["Name"] for s in container["Secrets"]] == ["SKYFLEET_WORKER_PASSWORD"]
        assert container["LinuxParameters"]["InitProcessEnabled"] is True


def test_every_task_definition_stops_gracefully_and_logs_with_retention(template):
    groups = resources(template, "AWS::Logs::LogGroup")
    families = task_definitions(template)
    assert {f"{STACK}-api", f"{STACK}-manager", f"{STACK}-ops"} <= set(families)
    for family, definition in families.items():
        for container in definition["ContainerDefinitions"]:
            assert container.get("StopTimeout"), family
            logging = container["LogConfiguration"]
            assert logging["LogDriver"] == "awslogs", family
            group = render(logging["Options"]["awslogs-group"]).strip("<>")
            assert groups[group].get("RetentionInDays"), (family, group)


# -- the template as a whole ------------------------------------------------------------------------------

def test_cfn_lint_finds_no_errors(template, tmp_path):
    from cfnlint.api import lint
    from cfnlint.config import ManualArgs

    path = tmp_path / "skyfleet.template.json"
    path.write_text(json.dumps(template, indent=1))
    matches = lint(path.read_text(), config=ManualArgs(regions=["us-east-1", "eu-west-1"]))
    errors = [f"{m.rule.id} {m.message} ({m.path})" for m in matches if m.rule.id.startswith("E")]
    assert not errors, "\n".join(errors)
    warnings = [f"{m.rule.id} {m.message}" for m in matches if m.rule.id.startswith("W")]
    print("cfn-lint warnings:", *warnings, sep="\n  ")
