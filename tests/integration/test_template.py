"""Static checks of the SAM template (template.yaml) and the sample events (events/*.json).

Nothing here talks to AWS: cfn-lint runs offline (about 1-2 s) and the rest parses files.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
EVENTS_DIR = ROOT / "events"

# Keys API Gateway REST (proxy integration, payload 1.0) always sends, and the
# ones aws-wsgi indexes directly (a missing queryStringParameters is a KeyError).
EVENT_KEYS = {
    "resource",
    "path",
    "httpMethod",
    "headers",
    "multiValueHeaders",
    "queryStringParameters",
    "multiValueQueryStringParameters",
    "pathParameters",
    "stageVariables",
    "requestContext",
    "body",
    "isBase64Encoded",
}
REQUEST_CONTEXT_KEYS = {
    "accountId",
    "resourceId",
    "stage",
    "requestId",
    "identity",
    "resourcePath",
    "httpMethod",
    "apiId",
    "protocol",
}
EXPECTED_EVENT_FILES = {
    "health.json",
    "models.json",
    "route.json",
    "route_dry_run.json",
    "route_invalid.json",
    "chat_completions.json",
    "route_base64.json",
}
# (method, path) the template must route to the function; all but /health need a key.
REQUIRED_ROUTES = {
    ("GET", "/health"),
    ("GET", "/models"),
    ("POST", "/route"),
    ("POST", "/v1/chat/completions"),
    ("GET", "/v1/models"),
    ("GET", "/openapi.json"),
}
ENV_VARS = {
    "MODELS_CONFIG_SSM_PARAMETER",
    "OPENAI_API_KEY_SECRET_ID",
    "CONFIG_TTL_SECONDS",
    "REQUEST_DEADLINE_SECONDS",
    "LOG_LEVEL",
    "OPENAI_BASE_URL",
}
API_GATEWAY_MAX_SECONDS = 29


# --------------------------------------------------------------------------- loading


class CfnLoader(yaml.SafeLoader):
    """SafeLoader that turns CloudFormation short tags into their long form.

    `!Ref X` -> {"Ref": "X"}, `!GetAtt A.B` -> {"Fn::GetAtt": ["A", "B"]},
    `!Sub s` -> {"Fn::Sub": "s"}, and so on for every other `!Tag`.
    """


def _construct_cfn_tag(loader: CfnLoader, tag_suffix: str, node: yaml.Node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "Condition":
        return {"Condition": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{tag_suffix}": value}


CfnLoader.add_multi_constructor("!", _construct_cfn_tag)


@pytest.fixture(scope="module")
def template() -> dict:
    with TEMPLATE.open(encoding="utf-8") as f:
        return yaml.load(f, Loader=CfnLoader)


@pytest.fixture(scope="module")
def function(template) -> dict:
    fn = template["Resources"]["RouterFunction"]
    assert fn["Type"] == "AWS::Serverless::Function"
    return fn


@pytest.fixture(scope="module")
def api_events(function) -> dict:
    return {
        name: ev["Properties"]
        for name, ev in function["Properties"]["Events"].items()
        if ev["Type"] == "Api"
    }


@pytest.fixture(scope="module")
def events() -> dict[str, dict]:
    loaded = {}
    for path in sorted(EVENTS_DIR.glob("*.json")):
        with path.open(encoding="utf-8") as f:
            loaded[path.name] = json.load(f)
    return loaded


def _param(template: dict, ref) -> dict:
    assert isinstance(ref, dict) and set(ref) == {"Ref"}, f"expected a !Ref to a parameter, got {ref!r}"
    return template["Parameters"][ref["Ref"]]


def _max_allowed(param: dict) -> float:
    if "AllowedValues" in param:
        return max(float(v) for v in param["AllowedValues"])
    assert "MaxValue" in param, "numeric parameter needs AllowedValues or MaxValue"
    return float(param["MaxValue"])


def _policy_documents(policies: list) -> list[tuple[str | None, dict]]:
    """(condition name or None, policy document) for every inline policy."""
    docs = []
    for item in policies:
        if isinstance(item, dict) and "Fn::If" in item:
            condition, when_true, when_false = item["Fn::If"]
            assert when_false == {"Ref": "AWS::NoValue"}
            docs.append((condition, when_true))
        elif isinstance(item, dict) and "Statement" in item:
            docs.append((None, item))
        # SAM policy templates (dicts with one key) and managed policy names are
        # not expected here; fail loudly so a reviewer looks at them.
        else:
            pytest.fail(f"unexpected policy entry {item!r}")
    return docs


def _statements(policies: list) -> list[tuple[str | None, dict]]:
    out = []
    for condition, doc in _policy_documents(policies):
        for stmt in doc["Statement"]:
            out.append((condition, stmt))
    return out


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _flatten_strings(value) -> list[str]:
    """Every string inside a value (intrinsic functions included)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _flatten_strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _flatten_strings(v)]
    return []


# --------------------------------------------------------------------------- cfn-lint


def _cfn_lint_command() -> list[str]:
    beside_python = Path(sys.executable).parent / "cfn-lint"
    if beside_python.exists():
        return [str(beside_python)]
    # cfnlint has no __main__, so `python -m cfnlint` does not work.
    return [sys.executable, "-c", "import sys; from cfnlint.runner import main; sys.exit(main())"]


def test_cfn_lint_passes_without_warnings():
    result = subprocess.run(
        [*_cfn_lint_command(), "template.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0, output
    assert output == ""


# --------------------------------------------------------------------------- function


def test_function_runtime_architecture_handler_and_build(function):
    props = function["Properties"]
    match = re.fullmatch(r"python3\.(\d+)", props["Runtime"])
    assert match and int(match.group(1)) >= 12, props["Runtime"]
    assert props["Architectures"] == ["arm64"]
    assert props["Handler"] == "handler.lambda_handler"
    assert props["CodeUri"] == "."
    assert function["Metadata"]["BuildMethod"] == "makefile"


def test_timeout_below_api_gateway_limit_and_deadline_below_timeout(template, function):
    props = function["Properties"]
    timeout_param = _param(template, props["Timeout"])
    assert _max_allowed(timeout_param) < API_GATEWAY_MAX_SECONDS
    assert float(timeout_param["Default"]) < API_GATEWAY_MAX_SECONDS

    deadline = props["Environment"]["Variables"]["REQUEST_DEADLINE_SECONDS"]
    map_name, key, attr = deadline["Fn::FindInMap"]
    assert key == props["Timeout"]
    mapping = template["Mappings"][map_name]
    allowed = timeout_param["AllowedValues"]
    assert {str(v) for v in allowed} == set(mapping), "every allowed timeout needs a deadline"
    for timeout in allowed:
        assert 0 < int(mapping[str(timeout)][attr]) < timeout


def test_memory_is_a_parameter(template, function):
    param = _param(template, function["Properties"]["MemorySize"])
    assert param["Type"] == "Number"


def test_reserved_concurrency_is_a_parameter(template, function):
    value = function["Properties"]["ReservedConcurrentExecutions"]
    if "Fn::If" in value:  # 0 = no reservation, for accounts with a tiny concurrency quota
        condition, when_set, when_unset = value["Fn::If"]
        assert condition in template["Conditions"]
        assert when_unset == {"Ref": "AWS::NoValue"}
        value = when_set
    param = _param(template, value)
    assert param["Type"] == "Number"
    assert int(param["Default"]) >= 1


def test_environment_variables(template, function):
    variables = function["Properties"]["Environment"]["Variables"]
    assert ENV_VARS <= set(variables)
    assert variables["MODELS_CONFIG_SSM_PARAMETER"] == {"Ref": "ModelsRegistryParameter"}


def test_json_logs_to_explicit_log_group_with_retention(template, function):
    logging_config = function["Properties"]["LoggingConfig"]
    assert logging_config["LogFormat"] == "JSON"
    group_id = logging_config["LogGroup"]["Ref"]
    group = template["Resources"][group_id]
    assert group["Type"] == "AWS::Logs::LogGroup"
    retention = _param(template, group["Properties"]["RetentionInDays"])
    assert retention["Type"] == "Number"


def test_models_registry_parameter(template):
    resource = template["Resources"]["ModelsRegistryParameter"]
    assert resource["Type"] == "AWS::SSM::Parameter"
    assert resource["Properties"]["Type"] == "String"
    registry = json.loads(resource["Properties"]["Value"])
    assert [row[1] for row in registry] == ["basic", "standard", "advanced", "premium"]
    assert all(len(row) == 7 and row[0] == "mock" for row in registry)


def test_template_registry_is_the_builtin_default(template):
    """The registry the stack seeds into SSM is the one the service uses without configuration."""
    from costroute.core.registry import default_registry_json
    from tests.registries import parse_registry

    text = template["Resources"]["ModelsRegistryParameter"]["Properties"]["Value"]
    assert json.loads(text) == json.loads(default_registry_json())
    # Exactly, prices included: compared as parsed Decimals, not only as floats.
    assert parse_registry(text) == parse_registry(default_registry_json())


# --------------------------------------------------------------------------- IAM


def test_iam_statements_are_least_privilege(template, function):
    statements = _statements(function["Properties"]["Policies"])
    assert statements
    for _condition, stmt in statements:
        assert stmt["Effect"] == "Allow"
        for action in _as_list(stmt["Action"]):
            assert "*" not in action, stmt
        for resource in _as_list(stmt["Resource"]):
            # '?' is allowed (secret ARN suffix); '*' is not, anywhere.
            assert all("*" not in s for s in _flatten_strings(resource)), stmt


def test_ssm_read_is_scoped_to_the_registry_parameter(template, function):
    statements = [
        (cond, s)
        for cond, s in _statements(function["Properties"]["Policies"])
        if "ssm:GetParameter" in _as_list(s["Action"])
    ]
    assert len(statements) == 1
    condition, stmt = statements[0]
    assert condition is None
    assert _as_list(stmt["Action"]) == ["ssm:GetParameter"]
    (resource,) = _as_list(stmt["Resource"])
    arn = resource["Fn::Sub"]
    name = template["Resources"]["ModelsRegistryParameter"]["Properties"]["Name"]
    name = name["Fn::Sub"] if isinstance(name, dict) else name
    # A name starting with '/' must be appended without another '/'.
    if name.startswith("/"):
        assert arn.endswith(":parameter${ModelsRegistryParameter}"), arn
    else:
        assert arn.endswith(":parameter/${ModelsRegistryParameter}"), arn
    assert arn.startswith("arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:")


def test_secret_read_is_conditional_and_scoped_to_the_secret(template, function):
    statements = [
        (cond, s)
        for cond, s in _statements(function["Properties"]["Policies"])
        if "secretsmanager:GetSecretValue" in _as_list(s["Action"])
    ]
    assert len(statements) == 1
    condition, stmt = statements[0]
    assert condition is not None, "the secret grant must depend on a non-empty secret name"
    assert "OpenAiSecretName" in json.dumps(template["Conditions"][condition])
    assert _as_list(stmt["Action"]) == ["secretsmanager:GetSecretValue"]
    (resource,) = _as_list(stmt["Resource"])
    assert resource["Fn::Sub"].endswith(":secret:${OpenAiSecretName}-??????")
    assert template["Parameters"]["OpenAiSecretName"]["Default"] == ""


def test_kms_decrypt_only_with_a_key_parameter(template, function):
    statements = [
        (cond, s)
        for cond, s in _statements(function["Properties"]["Policies"])
        if any(a.startswith("kms:") for a in _as_list(s["Action"]))
    ]
    for condition, stmt in statements:
        assert condition is not None
        assert _as_list(stmt["Action"]) == ["kms:Decrypt"]
        assert stmt["Resource"] == {"Ref": "OpenAiSecretKmsKeyArn"}


# --------------------------------------------------------------------------- API


def test_api_is_rest_with_api_key_and_usage_plan(template):
    api = template["Resources"]["RouterApi"]
    assert api["Type"] == "AWS::Serverless::Api"
    auth = api["Properties"]["Auth"]
    assert auth["ApiKeyRequired"] is True
    plan = auth["UsagePlan"]
    assert plan["CreateUsagePlan"] == "PER_API"
    assert plan["Quota"]["Period"] == "DAY"
    _param(template, plan["Quota"]["Limit"])
    _param(template, plan["Throttle"]["RateLimit"])
    _param(template, plan["Throttle"]["BurstLimit"])
    assert not any(r["Type"] == "AWS::Serverless::HttpApi" for r in template["Resources"].values())


def test_routes_and_only_health_opts_out_of_the_api_key(api_events):
    routes = {}
    for name, props in api_events.items():
        assert props["RestApiId"] == {"Ref": "RouterApi"}, name
        routes[(props["Method"].upper(), props["Path"])] = props
    assert REQUIRED_ROUTES <= set(routes)
    for (method, path), props in routes.items():
        key_required = props.get("Auth", {}).get("ApiKeyRequired", True)
        if (method, path) == ("GET", "/health"):
            assert key_required is False
        else:
            assert key_required is True, (method, path)


def test_outputs(template):
    outputs = template["Outputs"]
    url = outputs["ApiUrl"]["Value"]["Fn::Sub"]
    assert url.startswith("https://${RouterApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/")
    assert url.endswith("/")
    assert outputs["ApiKeyId"]["Value"] == {"Ref": "RouterApiApiKey"}
    text = json.dumps(outputs)
    assert "aws apigateway get-api-key --api-key" in text
    assert "--include-value" in text
    assert outputs["RouterFunctionArn"]["Value"] == {"Fn::GetAtt": ["RouterFunction", "Arn"]}
    assert outputs["ModelsRegistryParameterName"]["Value"] == {"Ref": "ModelsRegistryParameter"}


# --------------------------------------------------------------------------- events


def _decoded_body(event: dict) -> str | None:
    body = event["body"]
    if body is None:
        return None
    if event["isBase64Encoded"]:
        return base64.b64decode(body).decode("utf-8")
    return body


def test_expected_event_files_exist(events):
    assert EXPECTED_EVENT_FILES <= set(events)


def test_events_have_the_api_gateway_rest_shape(events, api_events):
    routes = {(p["Method"].upper(), p["Path"]) for p in api_events.values()}
    for name, event in events.items():
        assert EVENT_KEYS <= set(event), (name, EVENT_KEYS - set(event))
        ctx = event["requestContext"]
        assert isinstance(ctx, dict), name
        assert REQUEST_CONTEXT_KEYS <= set(ctx), (name, REQUEST_CONTEXT_KEYS - set(ctx))
        assert ctx["httpMethod"] == event["httpMethod"], name
        assert ctx["resourcePath"] == event["resource"], name
        assert ctx["path"] == f"/{ctx['stage']}{event['path']}", name
        assert isinstance(event["isBase64Encoded"], bool), name
        # Each event's resource is one the template defines for that method.
        assert (event["httpMethod"], event["resource"]) in routes or (
            "ANY",
            event["resource"],
        ) in routes, name
        headers = {k.lower(): v for k, v in event["headers"].items()}
        assert {k.lower(): [v] for k, v in event["headers"].items()} == {
            k.lower(): v for k, v in event["multiValueHeaders"].items()
        }, name
        if event["path"] != "/health":
            assert headers.get("x-api-key"), f"{name} needs an x-api-key header"
        body = _decoded_body(event)
        if body is not None:
            assert headers.get("content-type") == "application/json", name
            json.loads(body)


def test_event_bodies(events):
    route = json.loads(_decoded_body(events["route.json"]))
    assert route["input"] == "Write a haiku about the sea."
    assert route["constraints"]["prefer_provider"] == "mock"
    assert route["metadata"]["expected_output_tokens"] == 128

    dry_run = json.loads(_decoded_body(events["route_dry_run.json"]))
    assert dry_run == {**route, "dry_run": True}

    assert events["route_base64.json"]["isBase64Encoded"] is True
    assert json.loads(_decoded_body(events["route_base64.json"])) == route

    invalid = json.loads(_decoded_body(events["route_invalid.json"]))
    assert invalid == {"constraints": {"min_quality": 9}}

    chat = json.loads(_decoded_body(events["chat_completions.json"]))
    assert chat["model"] == "auto"
    assert chat["messages"][0]["role"] == "user"

    for name in ("health.json", "models.json"):
        assert events[name]["httpMethod"] == "GET"
        assert events[name]["body"] is None


def test_events_are_accepted_by_aws_wsgi(events):
    awsgi = pytest.importorskip("awsgi")
    for name, event in events.items():
        environ = awsgi.environ(event, None)
        assert environ["REQUEST_METHOD"] == event["httpMethod"], name
        assert environ["PATH_INFO"] == event["path"], name
        body = environ["wsgi.input"].read()
        assert int(environ["CONTENT_LENGTH"]) == len(body), name
        if event["body"] is not None:
            json.loads(body)
