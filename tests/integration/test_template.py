"""Static checks of the SAM template (template.yaml) and the sample events (events/*.json).

Nothing here talks to AWS: cfn-lint runs offline (about 1-2 s) and the rest parses files. The
template's intrinsic functions are evaluated here (``Rendered``) for given parameter values, as
CloudFormation would, so that each optional piece can be seen to appear with its parameter and to
disappear without it, and the IAM policy can be checked as the role would get it.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

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
# (method, path) the template must route to the function.
REQUIRED_ROUTES = {
    ("GET", "/health"),
    ("GET", "/"),
    ("GET", "/assets/{proxy+}"),
    ("GET", "/models"),
    ("POST", "/route"),
    ("POST", "/v1/chat/completions"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/{proxy+}"),
    ("GET", "/usage"),
    ("GET", "/openapi.json"),
}
# The only routes without the API key: they hold no data (the playground page sends the key the user types).
KEY_EXEMPT_ROUTES = {("GET", "/health"), ("GET", "/"), ("GET", "/assets/{proxy+}")}
ENV_VARS = {
    "MODELS_CONFIG_SSM_PARAMETER",
    "MODELS_CONFIG_FILE",
    "OPENAI_API_KEY_SECRET_ID",
    "CONFIG_TTL_SECONDS",
    "REQUEST_DEADLINE_SECONDS",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "OPENAI_BASE_URL",
    "BUDGETS_CONFIG_SSM_PARAMETER",
    "SPEND_TABLE_NAME",
}
API_GATEWAY_MAX_SECONDS = 29
# What the renderer answers for CloudFormation's pseudo parameters.
REGION = "us-east-1"
ACCOUNT = "123456789012"
STACK = "costroute"
PSEUDO_PARAMETERS = {
    "AWS::Region": REGION,
    "AWS::AccountId": ACCOUNT,
    "AWS::Partition": "aws",
    "AWS::StackName": STACK,
    "AWS::URLSuffix": "amazonaws.com",
}
BEDROCK_ACTIONS = ["bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"]
SPEND_TABLE_ACTIONS = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query",
                       "dynamodb:ConditionCheckItem"]
# Lambda's limit on all environment variables together, and IAM's on a role's inline policies together
# (characters, whitespace not counted).
LAMBDA_ENVIRONMENT_BYTES = 4096
IAM_ROLE_INLINE_POLICY_CHARACTERS = 10240
HAIKU = "anthropic.claude-3-5-haiku-20241022-v1:0"
NOVA = "amazon.nova-micro-v1:0"
US_SONNET = "us.anthropic.claude-3-5-sonnet-20241022-v2:0"
GLOBAL_SONNET = "global.anthropic.claude-sonnet-4-5-20250929-v1:0"
DEFAULT_PROFILE_REGIONS = ["us-east-1", "us-east-2", "us-west-2"]
BUDGETS = '{"default": {"daily_usd": 5, "monthly_usd": 100}, "admins": ["a1b2c3d4e5"]}'


# --------------------------------------------------------------------------- loading


class CfnLoader(yaml.SafeLoader):
    """SafeLoader that turns CloudFormation short tags into their long form.

    `!Ref X` -> {"Ref": "X"}, `!GetAtt A.B` -> {"Fn::GetAtt": ["A", "B"]},
    `!Sub s` -> {"Fn::Sub": "s"}, and so on for every other `!Tag`.
    """


def _construct_cfn_tag(loader: CfnLoader, tag_suffix: str, node: yaml.Node) -> dict:
    """The long form of one short tag."""
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


def load_template() -> dict:
    """template.yaml with its short tags in long form."""
    with TEMPLATE.open(encoding="utf-8") as f:
        return yaml.load(f, Loader=CfnLoader)


@pytest.fixture(scope="module")
def template() -> dict:
    """template.yaml, loaded once."""
    return load_template()


@pytest.fixture(scope="module")
def function(template: dict) -> dict:
    """The router function's resource, as written."""
    fn = template["Resources"]["RouterFunction"]
    assert fn["Type"] == "AWS::Serverless::Function"
    return fn


@pytest.fixture(scope="module")
def api_events(function: dict) -> dict:
    """The function's Api events' properties by event name."""
    return {
        name: ev["Properties"]
        for name, ev in function["Properties"]["Events"].items()
        if ev["Type"] == "Api"
    }


@pytest.fixture(scope="module")
def events() -> dict[str, dict]:
    """The sample API Gateway events by file name."""
    loaded = {}
    for path in sorted(EVENTS_DIR.glob("*.json")):
        with path.open(encoding="utf-8") as f:
            loaded[path.name] = json.load(f)
    return loaded


def _param(template: dict, ref: Any) -> dict:
    """The parameter a !Ref names."""
    assert isinstance(ref, dict) and set(ref) == {"Ref"}, f"expected a !Ref to a parameter, got {ref!r}"
    return template["Parameters"][ref["Ref"]]


def _max_allowed(param: dict) -> float:
    """The largest value a numeric parameter admits."""
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
    """(condition name or None, statement) for every statement of every inline policy."""
    out = []
    for condition, doc in _policy_documents(policies):
        for stmt in doc["Statement"]:
            out.append((condition, stmt))
    return out


def _statement(function: dict, sid: str) -> tuple[str | None, dict]:
    """(condition, statement) of the one statement with that Sid."""
    found = [(cond, s) for cond, s in _statements(function["Properties"]["Policies"]) if s.get("Sid") == sid]
    assert len(found) == 1, (sid, found)
    return found[0]


def _as_list(value: Any) -> list:
    """A value that may be one item or a list, as a list."""
    return value if isinstance(value, list) else [value]


def _flatten_strings(value: Any) -> list[str]:
    """Every string inside a value (intrinsic functions included)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _flatten_strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _flatten_strings(v)]
    return []


# --------------------------------------------------------------------------- rendering


class ParameterRejected(ValueError):
    """A parameter value CloudFormation would refuse (AllowedPattern, AllowedValues, MinValue, ...)."""


class MissingResource(LookupError):
    """A reference to a resource the template does not create for these parameter values."""


class _NoValue:
    """AWS::NoValue: the list item or property that it is removes itself."""


NO_VALUE = _NoValue()
SAM_GENERATED = {"RouterApiApiKey": "k1a2b3c4d5", "RouterApiUsagePlan": "u1a2b3", "RouterFunctionRole": "role"}


def _check_parameter(name: str, spec: Mapping[str, Any], raw: str) -> str | list[str]:
    """The parameter's value as Ref gives it, or ParameterRejected as CloudFormation would refuse it."""
    kind = spec["Type"]
    if "MaxLength" in spec and len(raw) > int(spec["MaxLength"]):
        raise ParameterRejected(f"{name}: longer than {spec['MaxLength']}")
    if kind == "CommaDelimitedList":
        members = [member.strip() for member in raw.split(",")]  # each member is space-trimmed
        for member in members:
            if "AllowedPattern" in spec and not re.fullmatch(spec["AllowedPattern"], member):
                raise ParameterRejected(f"{name}: member {member!r} does not match {spec['AllowedPattern']}")
        return members
    if "AllowedPattern" in spec and not re.fullmatch(spec["AllowedPattern"], raw):
        raise ParameterRejected(f"{name}: {raw!r} does not match {spec['AllowedPattern']}")
    if "AllowedValues" in spec and raw not in [str(v) for v in spec["AllowedValues"]]:
        raise ParameterRejected(f"{name}: {raw!r} is not one of {spec['AllowedValues']}")
    if kind == "Number":
        try:
            number = float(raw)
        except ValueError as exc:
            raise ParameterRejected(f"{name}: {raw!r} is not a number") from exc
        if "MinValue" in spec and number < float(spec["MinValue"]):
            raise ParameterRejected(f"{name}: {raw} < {spec['MinValue']}")
        if "MaxValue" in spec and number > float(spec["MaxValue"]):
            raise ParameterRejected(f"{name}: {raw} > {spec['MaxValue']}")
    return raw


class Rendered:
    """The template as CloudFormation evaluates it for some parameter values: conditions decided, intrinsic
    functions (Ref, Fn::If, Fn::Sub, Fn::Join, Fn::Split, Fn::Select, Fn::GetAtt, Fn::FindInMap) applied,
    AWS::NoValue removed, and the resources whose condition is false left out."""

    def __init__(self, template: dict, **overrides: str) -> None:
        """Check the overrides as CloudFormation would and take every other parameter's default."""
        self.template = template
        unknown = set(overrides) - set(template["Parameters"])
        assert not unknown, f"no such parameters: {unknown}"
        self.parameters: dict[str, str | list[str]] = {}
        for name, spec in template["Parameters"].items():
            raw = overrides.get(name, spec.get("Default"))
            assert raw is not None, f"{name} has no default; give a value"
            self.parameters[name] = _check_parameter(name, spec, str(raw))
        self._conditions: dict[str, bool] = {}

    # ---- conditions

    def condition(self, name: str) -> bool:
        """A named condition's value."""
        if name not in self._conditions:
            self._conditions[name] = self._boolean(self.template["Conditions"][name])
        return self._conditions[name]

    def _boolean(self, node: Any) -> bool:
        """A condition function's value."""
        [(function, args)] = node.items()
        if function == "Condition":
            return self.condition(args)
        if function == "Fn::Equals":
            left, right = (self.value(arg) for arg in args)
            return str(left) == str(right)
        if function == "Fn::Not":
            (inner,) = args
            return not self._boolean(inner)
        if function == "Fn::And":
            assert 2 <= len(args) <= 10, "Fn::And takes 2 to 10 conditions"
            return all(self._boolean(arg) for arg in args)
        if function == "Fn::Or":
            assert 2 <= len(args) <= 10, "Fn::Or takes 2 to 10 conditions"
            return any(self._boolean(arg) for arg in args)
        raise AssertionError(f"not a condition function: {function}")

    def exists(self, logical_id: str) -> bool:
        """Whether the stack has this resource for these parameter values."""
        resource = self.template["Resources"].get(logical_id)
        if resource is None:
            return logical_id in SAM_GENERATED
        return "Condition" not in resource or self.condition(resource["Condition"])

    # ---- values

    def value(self, node: Any) -> Any:
        """A template value with every intrinsic function evaluated."""
        if isinstance(node, list):
            items = [self.value(item) for item in node]
            return [item for item in items if item is not NO_VALUE]
        if isinstance(node, dict):
            if len(node) == 1:
                [(key, args)] = node.items()
                handler = self._FUNCTIONS.get(key)
                if handler is not None:
                    return handler(self, args)
            rendered = {key: self.value(item) for key, item in node.items()}
            return {key: item for key, item in rendered.items() if item is not NO_VALUE}
        return node

    def _ref(self, name: str) -> Any:
        """Ref: a pseudo parameter, a parameter's value, or what Ref returns for a resource of that type."""
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in PSEUDO_PARAMETERS:
            return PSEUDO_PARAMETERS[name]
        if name in self.parameters:
            return self.parameters[name]
        if not self.exists(name):
            raise MissingResource(name)
        if name in SAM_GENERATED:
            return SAM_GENERATED[name]
        resource = self.template["Resources"][name]
        props = resource.get("Properties", {})
        kind = resource["Type"]
        if kind == "AWS::SSM::Parameter":
            return self.value(props["Name"])
        if kind == "AWS::Logs::LogGroup":
            return self.value(props["LogGroupName"])
        if kind == "AWS::CloudWatch::Dashboard":
            return self.value(props["DashboardName"])
        if kind == "AWS::CloudWatch::Alarm":
            return self.value(props["AlarmName"])
        if kind == "AWS::DynamoDB::Table":
            return f"{STACK}-{name}-1A2B3C4D5E6F"
        if kind == "AWS::Serverless::Function":
            return f"{STACK}-{name}-AbCdEf123456"
        if kind == "AWS::Serverless::Api":
            return "a1b2c3d4e5"
        raise AssertionError(f"no Ref value known for {kind}")

    def _get_att(self, args: Any) -> str:
        """Fn::GetAtt of an Arn, shaped as that service shapes its ARNs."""
        name, attribute = args if isinstance(args, list) else args.split(".", 1)
        if not self.exists(name):
            raise MissingResource(name)
        assert attribute == "Arn", attribute
        kind = self.template["Resources"][name]["Type"]
        ref = self._ref(name)
        arns = {
            "AWS::DynamoDB::Table": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{ref}",
            "AWS::CloudWatch::Alarm": f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{ref}",
            "AWS::Serverless::Function": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{ref}",
        }
        return arns[kind]

    def _sub(self, args: Any) -> str:
        """Fn::Sub, in both forms, with ${!Literal} escapes."""
        text, variables = (args, {}) if isinstance(args, str) else args
        assert isinstance(text, str), "Fn::Sub's template must be a literal string"

        def replace(match: re.Match[str]) -> str:
            """One ${...} substituted."""
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                found = self.value(variables[name])
            elif "." in name and name not in PSEUDO_PARAMETERS:
                found = self._get_att(name)
            else:
                found = self._ref(name)
            assert isinstance(found, str), f"${{{name}}} is not a string: {found!r}"
            return found

        return re.sub(r"\$\{([^}]+)\}", replace, text)

    def _join(self, args: Any) -> str:
        """Fn::Join (a literal delimiter, as CloudFormation requires)."""
        delimiter, items = args
        assert isinstance(delimiter, str), "Fn::Join's delimiter must be a literal string"
        parts = self.value(items)
        assert all(isinstance(part, str) for part in parts), parts
        return delimiter.join(parts)

    def _split(self, args: Any) -> list[str]:
        """Fn::Split (a literal delimiter)."""
        delimiter, source = args
        assert isinstance(delimiter, str), "Fn::Split's delimiter must be a literal string"
        return str(self.value(source)).split(delimiter)

    def _select(self, args: Any) -> Any:
        """Fn::Select; an index out of range fails, as it fails the stack."""
        index, items = args
        position, listed = int(self.value(index)), self.value(items)
        if not 0 <= position < len(listed):
            raise IndexError(f"Fn::Select index {position} out of {listed!r}: the stack would fail")
        return listed[position]

    def _if(self, args: Any) -> Any:
        """Fn::If, after checking that the branch not taken is well-formed too."""
        name, when_true, when_false = args
        chosen, other = (when_true, when_false) if self.condition(name) else (when_false, when_true)
        # The branch not taken must not be broken either (an Fn::Select out of range fails a stack
        # whichever branch it is in); it may name a resource that does not exist, as that is why it is not taken.
        try:
            self.value(other)
        except MissingResource:
            pass
        return self.value(chosen)

    def _find_in_map(self, args: Any) -> Any:
        """Fn::FindInMap."""
        mapping, top, second = (self.value(arg) for arg in args)
        return self.template["Mappings"][mapping][str(top)][str(second)]

    _FUNCTIONS = {
        "Ref": _ref,
        "Fn::GetAtt": _get_att,
        "Fn::Sub": _sub,
        "Fn::Join": _join,
        "Fn::Split": _split,
        "Fn::Select": _select,
        "Fn::If": _if,
        "Fn::FindInMap": _find_in_map,
    }

    # ---- the stack

    def resource(self, logical_id: str) -> dict | None:
        """A resource as created, or None when its condition is false."""
        if not self.exists(logical_id):
            return None
        return self.value(self.template["Resources"][logical_id])

    def created(self, logical_id: str) -> dict:
        """A resource the stack must create, rendered."""
        rendered = self.resource(logical_id)
        assert rendered is not None, f"{logical_id} is not created for these parameters"
        return rendered

    def resources_of_type(self, kind: str) -> dict[str, dict]:
        """Every resource of a type that the stack creates, rendered."""
        return {
            name: rendered
            for name, resource in self.template["Resources"].items()
            if resource["Type"] == kind and (rendered := self.resource(name)) is not None
        }

    def outputs(self) -> dict[str, Any]:
        """The outputs the stack has, with their values."""
        return {
            name: self.value(output["Value"])
            for name, output in self.template["Outputs"].items()
            if "Condition" not in output or self.condition(output["Condition"])
        }

    def function_properties(self) -> dict:
        """The router function's properties, rendered."""
        return self.created("RouterFunction")["Properties"]

    def environment(self) -> dict[str, str]:
        """The function's environment variables."""
        return self.function_properties()["Environment"]["Variables"]

    def policies(self) -> list[dict]:
        """The function's inline policy documents."""
        return self.function_properties()["Policies"]

    def statements(self) -> dict[str, dict]:
        """The function's IAM statements by Sid."""
        found = [stmt for doc in self.policies() for stmt in doc["Statement"]]
        by_sid = {stmt["Sid"]: stmt for stmt in found}
        assert len(by_sid) == len(found), "every statement needs its own Sid"
        return by_sid


@pytest.fixture(scope="module")
def defaults(template: dict) -> Rendered:
    """The stack with every parameter at its default."""
    return Rendered(template)


def allows(statements: Iterable[dict], action: str, resource: str, context: Mapping[str, str] | None = None) -> bool:
    """Whether some Allow statement grants the action on the resource in the request context (IAM's matching:
    '*' and '?' wildcards, case-sensitive; conditions StringEquals only, the only operator the template uses)."""
    for stmt in statements:
        assert stmt["Effect"] == "Allow"
        if not any(fnmatchcase(action, pattern) for pattern in _as_list(stmt["Action"])):
            continue
        if not any(fnmatchcase(resource, pattern) for pattern in _as_list(stmt["Resource"])):
            continue
        conditions = stmt.get("Condition", {})
        assert set(conditions) <= {"StringEquals"}, conditions
        wanted = conditions.get("StringEquals", {})
        if all((context or {}).get(key) in _as_list(values) for key, values in wanted.items()):
            return True
    return False


def _policy_characters(documents: list[dict]) -> int:
    """What IAM counts of the role's inline policies: their JSON without whitespace."""
    return sum(len(re.sub(r"\s", "", json.dumps(doc, separators=(",", ":")))) for doc in documents)


def _foundation_model_arn(model: str, region: str = REGION) -> str:
    """A foundation model's ARN in a region ("" for the region-less one of global routing)."""
    return f"arn:aws:bedrock:{region}::foundation-model/{model}"


def _profile_arn(profile: str) -> str:
    """A cross-region inference profile's ARN in the stack's region and account."""
    return f"arn:aws:bedrock:{REGION}:{ACCOUNT}:inference-profile/{profile}"


def _secret_arn(name: str, suffix: str = "AbC123") -> str:
    """A secret's ARN as Secrets Manager makes it: the name, '-' and 6 random characters."""
    return f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{name}-{suffix}"


# --------------------------------------------------------------------------- cfn-lint


def _cfn_lint_command() -> list[str]:
    """How to run cfn-lint from this Python's environment."""
    beside_python = Path(sys.executable).parent / "cfn-lint"
    if beside_python.exists():
        return [str(beside_python)]
    # cfnlint has no __main__, so `python -m cfnlint` does not work.
    return [sys.executable, "-c", "import sys; from cfnlint.runner import main; sys.exit(main())"]


def test_cfn_lint_passes_without_warnings() -> None:
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


def test_every_parameter_is_in_one_console_group(template: dict) -> None:
    groups = template["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
    grouped = [name for group in groups for name in group["Parameters"]]
    assert sorted(grouped) == sorted(template["Parameters"])


# --------------------------------------------------------------------------- the renderer itself


def test_renderer_follows_cloudformation_on_lists_and_padding(template: dict) -> None:
    """The slot idiom the template uses, on the renderer, against values worked out by hand."""
    stack = Rendered(template, ProviderSecretNames=" a , b ")
    padded = {"Fn::Split": [",", {"Fn::Join": ["", [{"Fn::Join": [",", {"Ref": "ProviderSecretNames"}]}, ",,"]]}]}
    assert stack.parameters["ProviderSecretNames"] == ["a", "b"]  # members are space-trimmed
    assert stack.value(padded) == ["a", "b", "", ""]
    assert stack.value({"Fn::Select": [3, padded]}) == ""
    with pytest.raises(IndexError):
        stack.value({"Fn::Select": [4, padded]})
    assert Rendered(template).parameters["ProviderSecretNames"] == [""]  # an empty list is one empty member
    assert stack.value({"Fn::Sub": ["x-${A}-${AWS::Region}-${!Literal}", {"A": "1"}]}) == f"x-1-{REGION}-${{Literal}}"
    assert stack.value([{"Fn::If": ["HasBudgets", "yes", {"Ref": "AWS::NoValue"}]}, "kept"]) == ["kept"]
    with pytest.raises(MissingResource):
        stack.value({"Ref": "SpendTable"})  # no budgets document: no table
    with pytest.raises(ParameterRejected):
        Rendered(template, FunctionTimeout="29")


# --------------------------------------------------------------------------- function


def test_function_runtime_architecture_handler_and_build(function: dict) -> None:
    props = function["Properties"]
    match = re.fullmatch(r"python3\.(\d+)", props["Runtime"])
    assert match and int(match.group(1)) >= 12, props["Runtime"]
    assert props["Architectures"] == ["arm64"]
    assert props["Handler"] == "handler.lambda_handler"
    assert props["CodeUri"] == "."
    assert function["Metadata"]["BuildMethod"] == "makefile"


def test_timeout_below_api_gateway_limit_and_deadline_below_timeout(template: dict, function: dict) -> None:
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


def test_memory_is_a_parameter(template: dict, function: dict) -> None:
    param = _param(template, function["Properties"]["MemorySize"])
    assert param["Type"] == "Number"


def test_reserved_concurrency_is_a_parameter(template: dict, function: dict) -> None:
    value = function["Properties"]["ReservedConcurrentExecutions"]
    if "Fn::If" in value:  # 0 = no reservation, for accounts with a tiny concurrency quota
        condition, when_set, when_unset = value["Fn::If"]
        assert condition in template["Conditions"]
        assert when_unset == {"Ref": "AWS::NoValue"}
        value = when_set
    param = _param(template, value)
    assert param["Type"] == "Number"
    assert int(param["Default"]) >= 1


def test_environment_variables(template: dict, function: dict, defaults: Rendered) -> None:
    variables = function["Properties"]["Environment"]["Variables"]
    assert ENV_VARS <= set(variables)
    # Every variable the template sets is one the app reads.
    settings_source = (ROOT / "src" / "costroute" / "config" / "settings.py").read_text(encoding="utf-8")
    for name in variables:
        assert f'"{name}"' in settings_source, f"the app reads no {name}"
    assert variables["MODELS_CONFIG_SSM_PARAMETER"] == {
        "Fn::If": ["UseRegistryParameter", {"Ref": "ModelsRegistryParameter"}, {"Ref": "AWS::NoValue"}]
    }
    env = defaults.environment()
    assert env["MODELS_CONFIG_SSM_PARAMETER"] == f"/costroute/{STACK}/models"
    assert env["REQUEST_DEADLINE_SECONDS"] == "22"
    assert not {"MODELS_CONFIG_FILE", "OPENAI_BASE_URL", "BUDGETS_CONFIG_SSM_PARAMETER", "SPEND_TABLE_NAME"} & set(env)


def test_emf_log_format(function: dict) -> None:
    from costroute.config.settings import LOG_FORMATS

    assert function["Properties"]["Environment"]["Variables"]["LOG_FORMAT"] == "emf"
    assert "emf" in LOG_FORMATS


def test_json_logs_to_explicit_log_group_with_retention(template: dict, function: dict) -> None:
    logging_config = function["Properties"]["LoggingConfig"]
    assert logging_config["LogFormat"] == "JSON"
    group_id = logging_config["LogGroup"]["Ref"]
    group = template["Resources"][group_id]
    assert group["Type"] == "AWS::Logs::LogGroup"
    retention = _param(template, group["Properties"]["RetentionInDays"])
    assert retention["Type"] == "Number"


def test_environment_fits_lambda_even_with_everything_configured(template: dict) -> None:
    stack = Rendered(template, **FULL_CONFIGURATION)
    env = stack.environment()
    assert sum(len(name) + len(value) for name, value in env.items()) < LAMBDA_ENVIRONMENT_BYTES


# --------------------------------------------------------------------------- the registry


def test_models_registry_parameter(template: dict) -> None:
    resource = template["Resources"]["ModelsRegistryParameter"]
    assert resource["Type"] == "AWS::SSM::Parameter"
    assert resource["Properties"]["Type"] == "String"
    registry = json.loads(resource["Properties"]["Value"])
    assert [row[1] for row in registry] == ["basic", "standard", "advanced", "premium"]
    assert all(len(row) == 7 and row[0] == "mock" for row in registry)


def test_template_registry_is_the_builtin_default(template: dict) -> None:
    """The registry the stack seeds into SSM is the one the service uses without configuration."""
    from costroute.core.registry import default_registry_json
    from tests.registries import parse_registry

    text = template["Resources"]["ModelsRegistryParameter"]["Properties"]["Value"]
    assert json.loads(text) == json.loads(default_registry_json())
    # Exactly, prices included: compared as parsed Decimals, not only as floats.
    assert parse_registry(text) == parse_registry(default_registry_json())


def test_registry_file_replaces_the_ssm_parameter(template: dict) -> None:
    """With RegistryFile the app reads the file: no SSM variable, parameter, statement or output is left."""
    stack = Rendered(template, RegistryFile="registry.json")
    env = stack.environment()
    assert env["MODELS_CONFIG_FILE"] == "registry.json"
    assert "MODELS_CONFIG_SSM_PARAMETER" not in env  # it would win over the file
    assert stack.resource("ModelsRegistryParameter") is None
    assert "ReadModelsRegistry" not in stack.statements()
    assert "ModelsRegistryParameterName" not in stack.outputs()
    assert not any(s["Action"] == "ssm:GetParameter" for s in stack.statements().values())


@pytest.mark.parametrize("path", ["registry.json", "config/registry.json", "a_b-c.v2.json"])
def test_registry_file_accepts_relative_paths(template: dict, path: str) -> None:
    assert Rendered(template, RegistryFile=path).environment()["MODELS_CONFIG_FILE"] == path


@pytest.mark.parametrize("path", ["/var/task/registry.json", "../registry.json", "a/../b.json", "./registry.json",
                                  "a//b.json", "registry json", ".hidden"])
def test_registry_file_refuses_paths_outside_the_artifact(template: dict, path: str) -> None:
    with pytest.raises(ParameterRejected):
        Rendered(template, RegistryFile=path)


def _build_target_registry_lines() -> list[str]:
    """The commands of `make build-RouterFunction` that handle registry.json, as make would run them."""
    result = subprocess.run(
        ["make", "-n", "--no-print-directory", "build-RouterFunction", "ARTIFACTS_DIR=ARTIFACTS", f"PYTHON={sys.executable}"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )
    lines = [line for line in result.stdout.splitlines() if "registry.json" in line and not line.startswith("#")]
    assert lines, result.stdout
    return lines


def _run_registry_lines(lines: list[str], folder: Path) -> int:
    """Run each line in its own shell in ``folder``, stopping at the first failure as make does; the exit status."""
    for line in lines:
        status = subprocess.run(["/bin/sh", "-c", line], cwd=folder, timeout=60, check=False).returncode
        if status != 0:
            return status
    return 0


def test_build_copies_registry_json_into_the_artifact_root(tmp_path: Path) -> None:
    lines = _build_target_registry_lines()
    (tmp_path / "ARTIFACTS").mkdir()
    document = '{"providers": {}, "models": [["mock", "x", 3, 0.001, 0.002, 100, 512]]}'
    (tmp_path / "registry.json").write_text(document, encoding="utf-8")
    assert _run_registry_lines(lines, tmp_path) == 0
    assert (tmp_path / "ARTIFACTS" / "registry.json").read_text(encoding="utf-8") == document

    # Without one, a rebuild into the same folder leaves none behind.
    (tmp_path / "registry.json").unlink()
    assert _run_registry_lines(lines, tmp_path) == 0
    assert not (tmp_path / "ARTIFACTS" / "registry.json").exists()

    # A registry.json that is not JSON fails the build instead of shipping.
    (tmp_path / "registry.json").write_text("[1, 2", encoding="utf-8")
    assert _run_registry_lines(lines, tmp_path) != 0
    assert not (tmp_path / "ARTIFACTS" / "registry.json").exists()


# --------------------------------------------------------------------------- IAM


# Every optional piece switched on, with ids as long as real ones: the worst case for the size limits.
APAC_REGIONS = ["ap-east-2", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3", "ap-south-1", "ap-south-2",
                "ap-southeast-1", "ap-southeast-2", "ap-southeast-3", "ap-southeast-4", "ap-southeast-5", "ap-southeast-7"]
FULL_CONFIGURATION = {
    "OpenAiSecretName": "costroute/openai-api-key",
    "OpenAiSecretKmsKeyArn": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    "OpenAiBaseUrl": "https://api.example.com/v1",
    "ProviderSecretNames": ",".join(f"costroute/provider-number-{i}" for i in range(8)),
    "ProviderSecretPrefix": "costroute/",
    "BedrockFoundationModelIds": ",".join(f"anthropic.claude-3-5-sonnet-20241022-v{i}:0" for i in range(8)),
    "BedrockInferenceProfileIds": ",".join(f"apac.anthropic.claude-3-5-sonnet-20241022-v{i}:0" for i in range(4)),
    "BedrockProfileRegions": ",".join(APAC_REGIONS),
    "BudgetsDocument": BUDGETS,
    "AlarmTopicArn": f"arn:aws:sns:{REGION}:{ACCOUNT}:costroute-alarms",
}


def test_iam_statements_are_least_privilege(template: dict, function: dict) -> None:
    statements = _statements(function["Properties"]["Policies"])
    assert statements
    prefix_grants = 0
    for condition, stmt in statements:
        assert condition is not None, f"{stmt['Sid']} must depend on its parameter"
        assert stmt["Effect"] == "Allow"
        for action in _as_list(stmt["Action"]):
            assert "*" not in action, stmt
        for resource in _as_list(stmt["Resource"]):
            # '?' is allowed (secret ARN suffix); '*' only as the end of the provider-secret prefix grant.
            for text in _flatten_strings(resource):
                if "*" in text:
                    assert text == (
                        "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:${ProviderSecretPrefix}*"
                    ), stmt
                    assert stmt["Sid"] == "ReadProviderSecrets"
                    assert resource["Fn::If"][0] == "HasProviderSecretPrefix"
                    prefix_grants += 1
    assert prefix_grants == 1


def test_no_resource_is_a_bare_wildcard_anywhere(template: dict) -> None:
    def walk(node: Any) -> Iterable[Any]:
        """Every Resource / NotResource value inside a node."""
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("Resource", "NotResource"):
                    yield value
                yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    for resource in walk(template["Resources"]):
        assert "*" not in _as_list(resource), resource


@pytest.mark.parametrize("overrides", [{}, FULL_CONFIGURATION, {"RegistryFile": "registry.json"},
                                       {"BedrockInferenceProfileIds": US_SONNET},
                                       {"BedrockInferenceProfileIds": f"{US_SONNET},{GLOBAL_SONNET}",
                                        "BedrockProfileRegions": f"{REGION},us-west-2"}])
def test_rendered_policies_are_valid_and_scoped(template: dict, overrides: dict[str, str]) -> None:
    """As the role gets them: every statement has resources, each one a full ARN of this account, no '*'
    but the secret prefix's, and all of them together within IAM's limit for a role's inline policies."""
    stack = Rendered(template, **overrides)
    for sid, stmt in stack.statements().items():
        assert stmt["Resource"], sid
        for resource in _as_list(stmt["Resource"]):
            assert re.fullmatch(r"arn:aws:[a-z0-9-]+:([a-z0-9-]*):(\d{12})?:\S+", resource), (sid, resource)
            assert "*" not in resource or resource == f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:costroute/*"
        resources = _as_list(stmt["Resource"])
        assert len(resources) == len(set(resources)), (sid, "duplicate resources")
    assert _policy_characters(stack.policies()) <= IAM_ROLE_INLINE_POLICY_CHARACTERS


def test_ssm_read_is_scoped_to_the_registry_and_budgets_parameters(template: dict, function: dict) -> None:
    statements = [
        (cond, s)
        for cond, s in _statements(function["Properties"]["Policies"])
        if "ssm:GetParameter" in _as_list(s["Action"])
    ]
    assert {s["Sid"]: cond for cond, s in statements} == {
        "ReadModelsRegistry": "UseRegistryParameter", "ReadBudgets": "HasBudgets"}
    for condition, stmt in statements:
        assert _as_list(stmt["Action"]) == ["ssm:GetParameter"]
        (resource,) = _as_list(stmt["Resource"])
        arn = resource["Fn::Sub"]
        logical_id = {"ReadModelsRegistry": "ModelsRegistryParameter", "ReadBudgets": "BudgetsParameter"}[stmt["Sid"]]
        parameter = template["Resources"][logical_id]
        assert parameter["Condition"] == condition
        name = parameter["Properties"]["Name"]
        name = name["Fn::Sub"] if isinstance(name, dict) else name
        # A name starting with '/' must be appended without another '/'.
        if name.startswith("/"):
            assert arn.endswith(f":parameter${{{logical_id}}}"), arn
        else:
            assert arn.endswith(f":parameter/${{{logical_id}}}"), arn
        assert arn.startswith("arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:")


def test_rendered_ssm_reads(template: dict, defaults: Rendered) -> None:
    registry_arn = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/costroute/{STACK}/models"
    budgets_arn = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/costroute/{STACK}/budgets"
    assert defaults.statements()["ReadModelsRegistry"]["Resource"] == registry_arn
    assert "ReadBudgets" not in defaults.statements()
    with_budgets = Rendered(template, BudgetsDocument=BUDGETS).statements()
    assert with_budgets["ReadBudgets"]["Resource"] == budgets_arn
    assert with_budgets["ReadModelsRegistry"]["Resource"] == registry_arn


def test_secret_read_is_conditional_and_scoped_to_the_secret(template: dict, function: dict) -> None:
    condition, stmt = _statement(function, "ReadOpenAiSecret")
    assert condition is not None, "the secret grant must depend on a non-empty secret name"
    assert "OpenAiSecretName" in json.dumps(template["Conditions"][condition])
    assert _as_list(stmt["Action"]) == ["secretsmanager:GetSecretValue"]
    (resource,) = _as_list(stmt["Resource"])
    assert resource["Fn::Sub"].endswith(":secret:${OpenAiSecretName}-??????")
    assert template["Parameters"]["OpenAiSecretName"]["Default"] == ""
    # The only other secret statement is the provider secrets'.
    secret_sids = {s["Sid"] for _, s in _statements(function["Properties"]["Policies"])
                   if "secretsmanager:GetSecretValue" in _as_list(s["Action"])}
    assert secret_sids == {"ReadOpenAiSecret", "ReadProviderSecrets"}
    stack = Rendered(template, OpenAiSecretName="costroute/openai-api-key")
    assert stack.statements()["ReadOpenAiSecret"]["Resource"] == (
        f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:costroute/openai-api-key-??????")


def test_kms_decrypt_only_with_a_key_parameter(template: dict, function: dict) -> None:
    statements = [
        (cond, s)
        for cond, s in _statements(function["Properties"]["Policies"])
        if any(a.startswith("kms:") for a in _as_list(s["Action"]))
    ]
    for condition, stmt in statements:
        assert condition is not None
        assert _as_list(stmt["Action"]) == ["kms:Decrypt"]
        assert stmt["Resource"] == {"Ref": "OpenAiSecretKmsKeyArn"}


def test_without_optional_parameters_only_the_registry_is_readable(defaults: Rendered) -> None:
    """The defaults: a mock-only stack may read its registry parameter and nothing else."""
    assert set(defaults.statements()) == {"ReadModelsRegistry"}


@pytest.mark.parametrize(
    ("names", "prefix", "expected"),
    [
        ("", "", None),
        ("costroute/groq", "", [f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:costroute/groq-??????"]),
        ("costroute/groq, costroute/anthropic", "",
         [f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:costroute/groq-??????",
          f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:costroute/anthropic-??????"]),
        ("a,,b", "", [f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:a-??????",
                      f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:b-??????"]),
        ("", "costroute/", [f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:costroute/*"]),
        ("x", "team/prod/", [f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:x-??????",
                             f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:team/prod/*"]),
        (",".join(f"s{i}" for i in range(8)), "",
         [f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:s{i}-??????" for i in range(8)]),
    ],
)
def test_provider_secrets_grant_exactly_the_named_secrets(template: dict, names: str, prefix: str, expected: list[str] | None) -> None:
    stack = Rendered(template, ProviderSecretNames=names, ProviderSecretPrefix=prefix)
    statements = stack.statements()
    if expected is None:
        assert "ReadProviderSecrets" not in statements
        return
    stmt = statements["ReadProviderSecrets"]
    assert stmt["Action"] == "secretsmanager:GetSecretValue"
    assert stmt["Resource"] == expected


def test_too_many_provider_secrets_fail_the_deploy_instead_of_being_cut(template: dict) -> None:
    stack = Rendered(template, ProviderSecretNames=",".join(f"s{i}" for i in range(9)))
    resources = stack.statements()["ReadProviderSecrets"]["Resource"]
    # IAM refuses a Resource that is not an ARN, and the message names the parameter.
    assert [r for r in resources if not r.startswith("arn:")] == ["TOO-MANY-ProviderSecretNames-at-most-8"]


@pytest.mark.parametrize("prefix", ["*", "costroute", "costroute*", "costroute/*", "/", "a//", "costroute/?/"])
def test_provider_secret_prefix_is_a_folder_never_a_wildcard(template: dict, prefix: str) -> None:
    with pytest.raises(ParameterRejected):
        Rendered(template, ProviderSecretPrefix=prefix)


def test_registry_secrets_are_readable_and_no_others(template: dict) -> None:
    """A version-2 registry's providers name their secrets; given as ProviderSecretNames, exactly those are readable."""
    from costroute.core.registry import CredentialSource
    from tests.registries import parse_registry

    document = {
        "providers": {
            "groq": {"kind": "openai", "base_url": "https://api.groq.com/openai/v1",
                     "api_key": {"secret_id": "costroute/groq", "field": "key"}},
            "claude": {"kind": "anthropic", "api_key": {"secret_id": "costroute/anthropic"}},
        },
        "models": [
            {"provider": "groq", "name": "llama", "quality": 2, "in_cost_per_1k": 0.00005, "out_cost_per_1k": 0.00008,
             "latency_ms": 300, "max_output_tokens": 1024},
            {"provider": "claude", "name": "haiku", "quality": 3, "in_cost_per_1k": 0.0008, "out_cost_per_1k": 0.004,
             "latency_ms": 600, "max_output_tokens": 1024},
        ],
    }
    registry = parse_registry(document)
    secrets = sorted(spec.api_key.name for spec in registry.providers.values()
                     if spec.api_key.source is CredentialSource.SECRET)
    assert secrets == ["costroute/anthropic", "costroute/groq"]
    statements = Rendered(template, ProviderSecretNames=",".join(secrets)).statements().values()
    for name in secrets:
        assert allows(statements, "secretsmanager:GetSecretValue", _secret_arn(name))
    assert not allows(statements, "secretsmanager:GetSecretValue", _secret_arn("costroute/other"))
    assert not allows(statements, "secretsmanager:GetSecretValue", _secret_arn("costroute/groq-extra"))
    assert not allows(statements, "secretsmanager:DeleteSecret", _secret_arn("costroute/groq"))


def test_kms_decrypt_rendered_only_through_secrets_manager(template: dict) -> None:
    key = FULL_CONFIGURATION["OpenAiSecretKmsKeyArn"]
    stmt = Rendered(template, OpenAiSecretKmsKeyArn=key).statements()["DecryptSecrets"]
    assert stmt == {"Sid": "DecryptSecrets", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": key,
                    "Condition": {"StringEquals": {"kms:ViaService": f"secretsmanager.{REGION}.amazonaws.com"}}}
    assert "DecryptSecrets" not in Rendered(template).statements()


# --------------------------------------------------------------------------- Bedrock


BEDROCK_SIDS = {"InvokeBedrockFoundationModels", "InvokeBedrockInferenceProfiles", "InvokeBedrockModelsThroughProfiles"}


def test_no_bedrock_statement_without_models(template: dict, defaults: Rendered) -> None:
    assert not BEDROCK_SIDS & set(defaults.statements())
    # The destination regions alone grant nothing.
    assert not BEDROCK_SIDS & set(Rendered(template, BedrockProfileRegions="eu-west-1").statements())


def test_bedrock_statements_depend_on_their_lists(function: dict) -> None:
    for sid in BEDROCK_SIDS:
        condition, stmt = _statement(function, sid)
        assert condition in {"HasBedrockModels", "HasBedrockProfiles"}, (sid, condition)
        assert stmt["Action"] == BEDROCK_ACTIONS


def test_bedrock_foundation_models_only(template: dict) -> None:
    stack = Rendered(template, BedrockFoundationModelIds=f"{HAIKU},{NOVA}")
    statements = stack.statements()
    assert set(statements) & BEDROCK_SIDS == {"InvokeBedrockFoundationModels"}
    stmt = statements["InvokeBedrockFoundationModels"]
    assert stmt["Action"] == BEDROCK_ACTIONS
    assert stmt["Resource"] == [_foundation_model_arn(HAIKU), _foundation_model_arn(NOVA)]
    assert "Condition" not in stmt
    for action in BEDROCK_ACTIONS:  # Converse and ConverseStream
        assert allows(statements.values(), action, _foundation_model_arn(HAIKU))
    assert not allows(statements.values(), "bedrock:InvokeModel", _foundation_model_arn(HAIKU, "us-west-2"))
    assert not allows(statements.values(), "bedrock:InvokeModel", _foundation_model_arn("anthropic.claude-v2:1"))


def test_bedrock_geographic_profile(template: dict) -> None:
    stack = Rendered(template, BedrockInferenceProfileIds=US_SONNET)
    statements = stack.statements()
    assert set(statements) & BEDROCK_SIDS == {"InvokeBedrockInferenceProfiles", "InvokeBedrockModelsThroughProfiles"}
    assert statements["InvokeBedrockInferenceProfiles"]["Resource"] == [_profile_arn(US_SONNET)]
    routed = statements["InvokeBedrockModelsThroughProfiles"]
    underlying = "anthropic.claude-3-5-sonnet-20241022-v2:0"
    # This region, then every other listed destination region (this one is not repeated).
    assert routed["Resource"] == [_foundation_model_arn(underlying)] + [
        _foundation_model_arn(underlying, region) for region in DEFAULT_PROFILE_REGIONS if region != REGION]
    assert routed["Condition"] == {"StringEquals": {"bedrock:InferenceProfileArn": [_profile_arn(US_SONNET)]}}
    through = {"bedrock:InferenceProfileArn": _profile_arn(US_SONNET)}
    for region in DEFAULT_PROFILE_REGIONS:
        for action in BEDROCK_ACTIONS:
            assert allows(statements.values(), action, _foundation_model_arn(underlying, region), through)
    assert allows(statements.values(), "bedrock:InvokeModel", _profile_arn(US_SONNET))
    # Not in an unlisted region, not directly (without the profile), not the global model.
    assert not allows(statements.values(), "bedrock:InvokeModel", _foundation_model_arn(underlying, "us-west-1"), through)
    assert not allows(statements.values(), "bedrock:InvokeModel", _foundation_model_arn(underlying))
    assert not allows(statements.values(), "bedrock:InvokeModel", f"arn:aws:bedrock:::foundation-model/{underlying}", through)


def test_bedrock_global_profile(template: dict) -> None:
    statements = Rendered(template, BedrockInferenceProfileIds=GLOBAL_SONNET).statements()
    underlying = "anthropic.claude-sonnet-4-5-20250929-v1:0"
    assert statements["InvokeBedrockInferenceProfiles"]["Resource"] == [_profile_arn(GLOBAL_SONNET)]
    # A global profile may route to any commercial region: this region's model and the region-less one.
    assert statements["InvokeBedrockModelsThroughProfiles"]["Resource"] == [
        _foundation_model_arn(underlying), f"arn:aws:bedrock:::foundation-model/{underlying}"]


def test_bedrock_mixed_lists(template: dict) -> None:
    profiles = [US_SONNET, GLOBAL_SONNET, "eu.amazon.nova-pro-v1:0", "us.meta.llama3-2-3b-instruct-v1:0"]
    regions = ["eu-central-1", "eu-west-1", "eu-west-3"]
    stack = Rendered(template, BedrockFoundationModelIds=HAIKU, BedrockInferenceProfileIds=",".join(profiles),
                     BedrockProfileRegions=",".join(regions))
    statements = stack.statements()
    assert statements["InvokeBedrockFoundationModels"]["Resource"] == [_foundation_model_arn(HAIKU)]
    assert statements["InvokeBedrockInferenceProfiles"]["Resource"] == [_profile_arn(p) for p in profiles]
    routed = statements["InvokeBedrockModelsThroughProfiles"]
    assert routed["Resource"] == _expected_routed(profiles, regions)
    assert routed["Condition"]["StringEquals"]["bedrock:InferenceProfileArn"] == [_profile_arn(p) for p in profiles]


def test_bedrock_registry_models_are_callable(template: dict) -> None:
    """The registry's Bedrock models (upstream_model ids), given to the two lists, can be called, and nothing else."""
    from tests.registries import parse_registry

    models = [
        {"provider": "br", "name": name, "upstream_model": upstream, "quality": 3, "in_cost_per_1k": 0.001,
         "out_cost_per_1k": 0.002, "latency_ms": 300, "max_output_tokens": 1000}
        for name, upstream in (("haiku", HAIKU), ("sonnet", US_SONNET))
    ]
    registry = parse_registry({"providers": {"br": {"kind": "bedrock", "region": REGION}}, "models": models})
    upstreams = [model.upstream for model in registry.models if model.provider == "br"]
    foundation = [u for u in upstreams if u.count(".") == 1]
    profiles = [u for u in upstreams if u.count(".") == 2]
    statements = Rendered(template, BedrockFoundationModelIds=",".join(foundation),
                          BedrockInferenceProfileIds=",".join(profiles)).statements().values()
    assert allows(statements, "bedrock:InvokeModel", _foundation_model_arn(HAIKU))
    assert allows(statements, "bedrock:InvokeModelWithResponseStream", _profile_arn(US_SONNET))
    assert not allows(statements, "bedrock:InvokeModel", _profile_arn("us." + HAIKU))
    assert not allows(statements, "bedrock:CreateModelCustomizationJob", _foundation_model_arn(HAIKU))


def _expected_routed(profiles: list[str], regions: list[str]) -> list[str]:
    """The model ARNs a list of profiles needs, in the template's order."""
    expected: list[str] = []
    for profile in profiles:
        geography, underlying = profile.split(".", 1)
        expected.append(_foundation_model_arn(underlying))
        if geography == "global":
            expected.append(f"arn:aws:bedrock:::foundation-model/{underlying}")
        else:
            expected.extend(_foundation_model_arn(underlying, region) for region in regions if region != REGION)
    return expected


@pytest.mark.parametrize("rotation", range(4))
def test_every_slot_holds_its_own_member(template: dict, rotation: int) -> None:
    """Full lists, each member distinct, in every position: no slot reads another's member."""
    secrets = [f"costroute/p{i}" for i in range(8)]
    models = [f"anthropic.model-{i}-v1:0" for i in range(8)]
    profiles = [f"us.meta.llama-{i}-v1:0" for i in range(3)] + ["global.anthropic.sonnet-v1:0"]
    profiles = profiles[rotation:] + profiles[:rotation]  # the global one in each slot in turn
    regions = APAC_REGIONS[rotation:] + APAC_REGIONS[:rotation]
    statements = Rendered(template, ProviderSecretNames=",".join(secrets), BedrockFoundationModelIds=",".join(models),
                          BedrockInferenceProfileIds=",".join(profiles),
                          BedrockProfileRegions=",".join(regions)).statements()
    assert statements["ReadProviderSecrets"]["Resource"] == [
        f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{name}-??????" for name in secrets]
    assert statements["InvokeBedrockFoundationModels"]["Resource"] == [_foundation_model_arn(m) for m in models]
    assert statements["InvokeBedrockInferenceProfiles"]["Resource"] == [_profile_arn(p) for p in profiles]
    routed = statements["InvokeBedrockModelsThroughProfiles"]
    assert routed["Resource"] == _expected_routed(profiles, regions)
    assert routed["Condition"]["StringEquals"]["bedrock:InferenceProfileArn"] == [_profile_arn(p) for p in profiles]


@pytest.mark.parametrize(
    ("overrides", "guard"),
    [
        ({"BedrockFoundationModelIds": ",".join(f"a.m{i}" for i in range(9))}, "TOO-MANY-BedrockFoundationModelIds-at-most-8"),
        ({"BedrockInferenceProfileIds": ",".join(f"us.a.m{i}" for i in range(5))}, "TOO-MANY-BedrockInferenceProfileIds-at-most-4"),
        ({"BedrockInferenceProfileIds": US_SONNET, "BedrockProfileRegions": ",".join([*APAC_REGIONS, "me-south-1"])},
         "TOO-MANY-BedrockProfileRegions-at-most-12"),
    ],
)
def test_too_many_bedrock_ids_fail_the_deploy_instead_of_being_cut(template: dict, overrides: dict[str, str], guard: str) -> None:
    stack = Rendered(template, **overrides)
    resources = [r for stmt in stack.statements().values() for r in _as_list(stmt["Resource"])]
    assert [r for r in resources if not r.startswith("arn:")] == [guard]


@pytest.mark.parametrize(
    ("parameter", "value"),
    [
        ("BedrockFoundationModelIds", US_SONNET),  # a profile id in the foundation-model list
        ("BedrockFoundationModelIds", "*"),
        ("BedrockFoundationModelIds", "anthropic.*"),
        ("BedrockInferenceProfileIds", HAIKU),  # a foundation-model id in the profile list
        ("BedrockInferenceProfileIds", "us.anthropic.*"),
        ("BedrockProfileRegions", "*"),
        ("BedrockProfileRegions", "us-east-?"),
    ],
)
def test_bedrock_lists_refuse_wildcards_and_the_wrong_kind_of_id(template: dict, parameter: str, value: str) -> None:
    with pytest.raises(ParameterRejected):
        Rendered(template, **{parameter: value})


# --------------------------------------------------------------------------- spend control


def test_spend_table(template: dict) -> None:
    table = template["Resources"]["SpendTable"]
    assert table["Type"] == "AWS::DynamoDB::Table"
    assert table["Condition"] == "HasBudgets"
    props = table["Properties"]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert "ProvisionedThroughput" not in props
    assert props["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}]
    assert sorted(props["AttributeDefinitions"], key=lambda a: a["AttributeName"]) == [
        {"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}]
    assert props["TimeToLiveSpecification"] == {"AttributeName": "ttl", "Enabled": True}
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["SSESpecification"]["SSEEnabled"] is True
    assert "GlobalSecondaryIndexes" not in props and "LocalSecondaryIndexes" not in props
    # The ledger outlives the stack.
    assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain"


def test_spend_table_matches_the_store(template: dict) -> None:
    """The key schema and TTL attribute are the ones costroute.stores.dynamodb writes."""
    source = (ROOT / "src" / "costroute" / "stores" / "dynamodb.py").read_text(encoding="utf-8")
    assert '{"pk": _s(' in source and '"sk": _s(' in source
    assert '"#ttl": "ttl"' in source


def test_budgets_parameter(template: dict) -> None:
    parameter = template["Resources"]["BudgetsParameter"]
    assert parameter["Condition"] == "HasBudgets"
    stack = Rendered(template, BudgetsDocument=BUDGETS)
    rendered = stack.created("BudgetsParameter")["Properties"]
    assert rendered["Name"] == f"/costroute/{STACK}/budgets"
    assert rendered["Type"] == "String"
    assert json.loads(rendered["Value"]) == json.loads(BUDGETS)


def test_budgets_document_is_read_by_the_app(template: dict) -> None:
    """The template's sample document, and the one the stack stores, are budgets the app accepts."""
    from costroute.core.budgets import parse_budgets_text

    document = parse_budgets_text(BUDGETS)
    assert document.admins == frozenset({"a1b2c3d4e5"})
    assert document.default is not None and document.default.daily_usd == 5


@pytest.mark.parametrize("document", ["[1]", "budgets", '"x"', "{" + "x" * 4096 + "}"])
def test_budgets_document_must_be_an_object_of_at_most_4_kb(template: dict, document: str) -> None:
    with pytest.raises(ParameterRejected):
        Rendered(template, BudgetsDocument=document)


def test_without_budgets_nothing_of_spend_control_exists(defaults: Rendered) -> None:
    assert defaults.resource("SpendTable") is None
    assert defaults.resource("BudgetsParameter") is None
    assert not {"ReadBudgets", "UseSpendTable"} & set(defaults.statements())
    assert not {"BUDGETS_CONFIG_SSM_PARAMETER", "SPEND_TABLE_NAME"} & set(defaults.environment())
    assert not {"SpendTableName", "BudgetsParameterName"} & set(defaults.outputs())


def test_with_budgets_the_function_uses_exactly_the_table(template: dict) -> None:
    stack = Rendered(template, BudgetsDocument=BUDGETS)
    env = stack.environment()
    table_name = stack.value({"Ref": "SpendTable"})
    assert env["SPEND_TABLE_NAME"] == table_name
    assert env["BUDGETS_CONFIG_SSM_PARAMETER"] == f"/costroute/{STACK}/budgets"
    stmt = stack.statements()["UseSpendTable"]
    assert sorted(stmt["Action"]) == sorted(SPEND_TABLE_ACTIONS)
    table_arn = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{table_name}"
    assert stmt["Resource"] == table_arn  # the table only: no index, no other table
    assert "Condition" not in stmt
    statements = stack.statements().values()
    for action in SPEND_TABLE_ACTIONS:
        assert allows(statements, action, table_arn)
    for action in ("dynamodb:Scan", "dynamodb:DeleteItem", "dynamodb:DeleteTable", "dynamodb:BatchWriteItem"):
        assert not allows(statements, action, table_arn)
    assert not allows(statements, "dynamodb:Query", table_arn + "/index/any")
    outputs = stack.outputs()
    assert outputs["SpendTableName"] == table_name
    assert outputs["BudgetsParameterName"] == f"/costroute/{STACK}/budgets"


def test_spend_statement_is_conditional_and_names_the_table_arn(function: dict) -> None:
    condition, stmt = _statement(function, "UseSpendTable")
    assert condition == "HasBudgets"
    assert stmt["Resource"] == {"Fn::GetAtt": ["SpendTable", "Arn"]}
    assert sorted(stmt["Action"]) == sorted(SPEND_TABLE_ACTIONS)


# --------------------------------------------------------------------------- API


def test_api_is_rest_with_api_key_and_usage_plan(template: dict) -> None:
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
    # Its name is the ApiName dimension of the metrics the 5xx alarm reads.
    assert api["Properties"]["Name"] == {"Ref": "AWS::StackName"}


def test_routes_and_only_health_and_the_playground_opt_out_of_the_api_key(api_events: dict) -> None:
    routes = {}
    for name, props in api_events.items():
        assert props["RestApiId"] == {"Ref": "RouterApi"}, name
        key = (props["Method"].upper(), props["Path"])
        assert key not in routes, f"two events for {key}"
        routes[key] = props
    assert REQUIRED_ROUTES <= set(routes)
    exempt = set()
    for (method, path), props in routes.items():
        key_required = props.get("Auth", {}).get("ApiKeyRequired", True)
        if key_required is False:
            exempt.add((method, path))
        else:
            assert key_required is True, (method, path)
    assert exempt == KEY_EXEMPT_ROUTES


def test_the_playground_routes_are_the_apps(api_events: dict) -> None:
    """GET / and /assets/<file> are what costroute.web.playground serves (a catch-all /{proxy+} never matches /)."""
    from costroute.web.playground import playground

    assert playground.static_url_path == "/assets"
    paths = {props["Path"] for props in api_events.values()}
    assert {"/", "/assets/{proxy+}"} <= paths


def test_outputs(template: dict, defaults: Rendered) -> None:
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
    assert outputs["ModelsRegistryParameterName"]["Condition"] == "UseRegistryParameter"
    assert outputs["SpendTableName"] == {"Condition": "HasBudgets", "Description": outputs["SpendTableName"]["Description"],
                                         "Value": {"Ref": "SpendTable"}}
    assert outputs["BudgetsParameterName"]["Condition"] == "HasBudgets"
    rendered = defaults.outputs()
    assert rendered["DashboardUrl"] == (f"https://{REGION}.console.aws.amazon.com/cloudwatch/home?region={REGION}"
                                        f"#dashboards:name={STACK}-{REGION}")
    assert rendered["ModelsRegistryParameterName"] == f"/costroute/{STACK}/models"


# --------------------------------------------------------------------------- dashboard and alarms

# Every alarm of the template (the 5xx rate, spend per hour and a provider's failure rate, and failovers).
ALARMS = {"ErrorRateAlarm", "HourlySpendAlarm", "FailoverRateAlarm", "ProviderFailureAlarm"}
# Metrics of other namespaces the template may name: what API Gateway (REST) and Lambda publish.
AWS_METRICS = {
    "AWS/ApiGateway": ({"Count", "4XXError", "5XXError", "Latency", "IntegrationLatency"}, {"ApiName", "Stage"}),
    "AWS/Lambda": ({"Invocations", "Errors", "Throttles", "Duration", "ConcurrentExecutions"}, {"FunctionName"}),
}
SEARCH = re.compile(r"SEARCH\('\{(?P<namespace>[^,}]+)(?P<dimensions>(?:,[^,}]+)*)\} MetricName=\"(?P<metric>\w+)\"', "
                    r"'(?P<stat>\w+)', (?P<period>\d+)\)")
# A Metrics Insights query, in the subset the template's alarms use (tests/integration/test_alarm_math.py evaluates
# it): SELECT FUNC(metric) FROM SCHEMA(namespace, dimension...) [GROUP BY dimension] [ORDER BY FUNC() [DESC|ASC]]
# [LIMIT n]. Keywords are case-insensitive, identifiers case-sensitive; no WHERE, no FROM without SCHEMA.
_IDENTIFIER = r'(?:[A-Za-z_]\w*|"[^"\\]+")'
_FUNCTION = r"(?i:AVG|SUM|MAX|MIN|COUNT)"
METRICS_INSIGHTS = re.compile(
    rf"(?i:SELECT)\s+(?P<function>{_FUNCTION})\(\s*(?P<metric>{_IDENTIFIER})\s*\)"
    rf"\s+(?i:FROM)\s+(?i:SCHEMA)\(\s*(?P<namespace>{_IDENTIFIER})(?P<dimensions>(?:\s*,\s*{_IDENTIFIER})*)\s*\)"
    rf"(?:\s+(?i:GROUP)\s+(?i:BY)\s+(?P<group>{_IDENTIFIER}))?"
    rf"(?:\s+(?i:ORDER)\s+(?i:BY)\s+(?P<order>{_FUNCTION})\(\s*\)(?:\s+(?P<direction>(?i:DESC|ASC)))?)?"
    rf"(?:\s+(?i:LIMIT)\s+(?P<limit>\d+))?\s*"
)


def unquoted(identifier: str) -> str:
    """A Metrics Insights identifier without its double quotes."""
    return identifier[1:-1] if identifier.startswith('"') else identifier


def metrics_insights(expression: str) -> dict[str, Any] | None:
    """A Metrics Insights query's parts (None when the expression is not one, e.g. metric math); a query outside
    the subset above raises NotImplementedError."""
    if not re.match(r"\s*SELECT\b", expression, re.IGNORECASE):
        return None
    match = METRICS_INSIGHTS.fullmatch(expression)
    if match is None:
        raise NotImplementedError(f"Metrics Insights beyond SELECT FUNC(m) FROM SCHEMA(...) [GROUP BY d] "
                                  f"[ORDER BY FUNC() DESC|ASC] [LIMIT n]: {expression!r}")
    dimensions = [unquoted(d.strip()) for d in match["dimensions"].split(",") if d.strip()]
    return {
        "function": match["function"].upper(),
        "metric": unquoted(match["metric"]),
        "namespace": unquoted(match["namespace"]),
        "dimensions": dimensions,
        "group": unquoted(match["group"]) if match["group"] else None,
        "order": match["order"].upper() if match["order"] else None,
        "descending": bool(match["direction"]) and match["direction"].upper() == "DESC",  # ASC by default
        "limit": int(match["limit"]) if match["limit"] else None,
    }


def _emitted_metrics() -> set[str]:
    """Every metric the app's EMF lines name."""
    from costroute.observe.emf import METRIC_UNITS, PROVIDER_FAILURE_METRIC

    return set(METRIC_UNITS) | {PROVIDER_FAILURE_METRIC}


def _emitted_dimension_sets(metric: str) -> set[frozenset[str]]:
    """The dimension sets the app's EMF lines give a metric."""
    from costroute.observe.emf import (
        DIMENSION_SETS,
        ERROR_DIMENSION_SETS,
        METRIC_UNITS,
        PROVIDER_DIMENSION_SETS,
        PROVIDER_FAILURE_METRIC,
    )

    if metric == PROVIDER_FAILURE_METRIC:  # its own directive, dimension set [Provider] only
        return {frozenset(names) for names in PROVIDER_DIMENSION_SETS}
    assert metric in METRIC_UNITS, f"the app emits no metric {metric}"
    sets = {frozenset(names) for names in DIMENSION_SETS}
    if metric == "Errors":
        sets |= {frozenset(names) for names in ERROR_DIMENSION_SETS}
    return sets


def _check_metric(namespace: str, metric: str, dimensions: Mapping[str, str], stack: Rendered) -> None:
    """The metric is one the app (namespace Costroute) or API Gateway / Lambda publish, with dimensions they use."""
    from costroute.observe.emf import NAMESPACE

    if namespace == NAMESPACE:
        assert frozenset(dimensions) in _emitted_dimension_sets(metric), (metric, dimensions)
        return
    names, dimension_names = AWS_METRICS[namespace]
    assert metric in names, (namespace, metric)
    assert set(dimensions) <= dimension_names, (namespace, dimensions)
    if namespace == "AWS/ApiGateway":
        api = stack.created("RouterApi")["Properties"]
        assert dimensions == {"ApiName": api["Name"], "Stage": stack.parameters["StageName"]}
    else:
        assert dimensions == {"FunctionName": stack.value({"Ref": "RouterFunction"})}


def _dashboard(stack: Rendered) -> dict:
    """The stack's dashboard body, parsed (it must be JSON once substituted)."""
    (dashboard,) = stack.resources_of_type("AWS::CloudWatch::Dashboard").values()
    return json.loads(dashboard["Properties"]["DashboardBody"])


def _widget_metrics(widget: dict) -> tuple[list[tuple[str, str, dict[str, str], dict]], list[dict]]:
    """A metric widget's metrics as (namespace, name, dimensions, options), and its expressions."""
    metrics, expressions = [], []
    for entry in widget["properties"]["metrics"]:
        if len(entry) == 1 and isinstance(entry[0], dict):
            expressions.append(entry[0])
            continue
        options = entry[-1] if isinstance(entry[-1], dict) else {}
        names = entry[:-1] if options else entry
        assert all(isinstance(n, str) and n != "." for n in names), entry  # written out, no "." shorthand
        namespace, metric, *pairs = names
        assert len(pairs) % 2 == 0, entry
        metrics.append((namespace, metric, dict(zip(pairs[::2], pairs[1::2], strict=True)), options))
    return metrics, expressions


def test_dashboard_is_valid_json_naming_only_metrics_the_app_emits(template: dict) -> None:
    from costroute.observe.emf import NAMESPACE, PROVIDER_FAILURE_METRIC

    for overrides in ({}, FULL_CONFIGURATION, {"HourlySpendAlarmUsd": "12.5", "StageName": "dev"},
                      {"ProviderFailureAlarmPercent": "7.5"}):
        stack = Rendered(template, **overrides)
        body = _dashboard(stack)
        named: set[str] = set()
        cells: set[tuple[int, int]] = set()
        for widget in body["widgets"]:
            assert 0 <= widget["x"] and widget["x"] + widget["width"] <= 24, widget
            area = {(x, y) for x in range(widget["x"], widget["x"] + widget["width"])
                    for y in range(widget["y"], widget["y"] + widget["height"])}
            assert not area & cells, f"{widget['properties']['title']} overlaps another widget"
            cells |= area
            if widget["type"] != "metric":
                continue
            assert widget["properties"]["region"] == REGION
            metrics, expressions = _widget_metrics(widget)
            ids = {options["id"] for *_, options in metrics if "id" in options}
            for namespace, metric, dimensions, _ in metrics:
                _check_metric(namespace, metric, dimensions, stack)
                if namespace == NAMESPACE:
                    named.add(metric)
            for expression in expressions:
                text = expression["expression"]
                search = SEARCH.fullmatch(text)
                if search:
                    dimension_names = [d for d in search["dimensions"].split(",") if d]
                    assert search["namespace"] == NAMESPACE
                    assert frozenset(dimension_names) in _emitted_dimension_sets(search["metric"]), text
                    named.add(search["metric"])
                else:  # metric math over the widget's own metrics
                    referenced = set(re.findall(r"\b[a-z]\w*\b", text))
                    assert referenced <= ids, (text, ids)
                    assert ids, text
        assert named <= _emitted_metrics()
        # What the issue asks the dashboard to show.
        assert {"CostUSD", "Requests", "Errors", "RouterOverheadMs", "ProviderLatencyMs", "Failovers",
                "BudgetRefused", PROVIDER_FAILURE_METRIC} <= named


def test_dashboard_shows_cost_per_hour_by_model_and_the_latency_percentiles(defaults: Rendered) -> None:
    widgets = _dashboard(defaults)["widgets"]
    searches = [e["expression"] for w in widgets if w["type"] == "metric" for e in _widget_metrics(w)[1]]
    assert "SEARCH('{Costroute,Model} MetricName=\"CostUSD\"', 'Sum', 3600)" in searches
    stats = {(metric, options.get("stat", w["properties"].get("stat")))
             for w in widgets if w["type"] == "metric" for _, metric, _, options in _widget_metrics(w)[0]}
    for metric in ("RouterOverheadMs", "ProviderLatencyMs"):
        assert {(metric, "p50"), (metric, "p99")} <= stats
    for metric in ("Requests", "Errors", "Failovers", "BudgetRefused"):
        assert (metric, "Sum") in stats
    # The 5xx rate graph is the alarm's own expression.
    (rate,) = [e["expression"] for w in widgets if w["type"] == "metric" for e in _widget_metrics(w)[1] if e["id"] == "rate"]
    alarm_rate = next(q for q in defaults.created("ErrorRateAlarm")["Properties"]["Metrics"] if q["Id"] == "rate")
    assert rate == alarm_rate["Expression"]
    alarm_widget = next(w for w in widgets if w["type"] == "alarm")
    alarms = defaults.resources_of_type("AWS::CloudWatch::Alarm")
    assert set(alarms) == ALARMS
    assert sorted(alarm_widget["properties"]["alarms"]) == sorted(
        defaults.value({"Fn::GetAtt": [name, "Arn"]}) for name in alarms)


def test_dashboard_shows_each_providers_failure_rate_as_the_alarm_reads_it(template: dict) -> None:
    """The provider graph is ProviderFailurePercent's Average per provider, not Errors by Provider (the provider of
    the request's last model, not the one that failed)."""
    from costroute.observe.emf import NAMESPACE, PROVIDER_FAILURE_METRIC

    stack = Rendered(template, ProviderFailureAlarmPercent="7.5")
    widgets = [w for w in _dashboard(stack)["widgets"] if w["type"] == "metric"]
    (widget,) = [w for w in widgets if w["properties"]["title"] == "Provider failure rate (%)"]
    metrics, expressions = _widget_metrics(widget)
    assert not metrics
    (expression,) = expressions
    search = SEARCH.fullmatch(expression["expression"])
    assert search, expression
    assert (search["namespace"], search["dimensions"], search["metric"], search["stat"]) == (
        NAMESPACE, ",Provider", PROVIDER_FAILURE_METRIC, "Average")
    (query,) = stack.created("ProviderFailureAlarm")["Properties"]["Metrics"]
    assert int(search["period"]) == query["Period"] == widget["properties"]["period"]
    assert widget["properties"]["annotations"]["horizontal"] == [{"label": "provider-failure alarm", "value": 7.5}]
    # No graph reads Errors by Provider any more.
    for other in widgets:
        for entry in _widget_metrics(other)[1]:
            found = SEARCH.fullmatch(entry["expression"])
            assert not (found and found["metric"] == "Errors" and found["dimensions"] == ",Provider"), other


def test_dashboard_log_queries_use_the_log_lines_fields(defaults: Rendered) -> None:
    """The Logs Insights widgets read fields the request line (costroute.observe.logline) and EMF actually have."""
    from decimal import Decimal

    from costroute.observe.emf import emf_document
    from costroute.observe.record import RequestRecord

    record = RequestRecord(
        request_id="r1", timestamp=1_800_000_000.0, dialect="route", method="POST", path="/route", http_status=502,
        error_type="upstream_error", caller="a1b2c3d4e5", model="mock:basic", provider="mock", provider_kind="mock",
        upstream_model="basic", cost_usd=Decimal("0.000113"), estimated_cost_usd=Decimal("0.0008"),
    )
    fields = set(emf_document(record)) | {"@timestamp", "@message"}
    queries = [w["properties"]["query"] for w in _dashboard(defaults)["widgets"] if w["type"] == "log"]
    assert queries
    group = defaults.value({"Ref": "RouterFunctionLogGroup"})
    for query in queries:
        assert query.startswith(f"SOURCE '{group}' | ")
        used = set(re.findall(r"`([^`]+)`", query)) | set(re.findall(r"(?<![\w.`@])(@?[A-Za-z_][\w]*)(?=[ ,)]|$)", query))
        used -= {"SOURCE", "filter", "and", "or", "sort", "desc", "asc", "fields", "limit", "ispresent", "stats", "by"}
        assert used <= fields, used - fields


def test_alarms_read_only_metrics_the_app_or_api_gateway_emit(template: dict) -> None:
    from costroute.observe.emf import NAMESPACE, PROVIDER_FAILURE_METRIC

    for overrides in ({}, {"StageName": "dev"}):
        stack = Rendered(template, **overrides)
        alarms = stack.resources_of_type("AWS::CloudWatch::Alarm")
        assert set(alarms) == ALARMS
        insights: dict[str, str] = {}
        for name, alarm in alarms.items():
            props = alarm["Properties"]
            queries = props.get("Metrics") or [{"MetricStat": {"Metric": {k: props[k] for k in ("Namespace", "MetricName")}}}]
            for query in queries:
                if "MetricStat" in query:
                    metric = query["MetricStat"]["Metric"]
                    dimensions = {d["Name"]: d["Value"] for d in metric.get("Dimensions", [])}
                    _check_metric(metric["Namespace"], metric["MetricName"], dimensions, stack)
                elif (parsed := metrics_insights(query["Expression"])) is not None:
                    # A Metrics Insights query names its metric itself: the app's, with the dimension set it emits.
                    assert parsed["namespace"] == NAMESPACE, (name, query)
                    assert frozenset(parsed["dimensions"]) in _emitted_dimension_sets(parsed["metric"]), (name, query)
                    assert parsed["group"] is None or parsed["group"] in parsed["dimensions"], (name, query)
                    assert "Period" in query, (name, query)  # its own period: no MetricStat carries one
                    insights[name] = parsed["metric"]
            assert props["TreatMissingData"] == "notBreaching", name  # no traffic (no datapoint) is no outage
            assert props["AlarmName"].startswith(f"{STACK}-"), name
        assert insights == {"ProviderFailureAlarm": PROVIDER_FAILURE_METRIC}


def test_alarm_thresholds_are_parameters(template: dict) -> None:
    alarms = {name: r["Properties"] for name, r in template["Resources"].items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    assert alarms["ErrorRateAlarm"]["Threshold"] == {"Ref": "ErrorRateAlarmPercent"}
    assert alarms["HourlySpendAlarm"]["Threshold"] == {"Ref": "HourlySpendAlarmUsd"}
    assert alarms["FailoverRateAlarm"]["Threshold"] == {"Ref": "FailoverRateAlarmPercent"}
    assert alarms["ProviderFailureAlarm"]["Threshold"] == {"Ref": "ProviderFailureAlarmPercent"}
    assert set(alarms) == ALARMS
    parameters = template["Parameters"]
    assert parameters["ErrorRateAlarmPercent"]["Default"] == 5
    assert parameters["HourlySpendAlarmUsd"]["Default"] == 5
    provider = parameters["ProviderFailureAlarmPercent"]
    assert (provider["Type"], provider["Default"], provider["MinValue"], provider["MaxValue"]) == ("Number", 20, 0, 100)
    # The per-provider alarm is one Metrics Insights query with its own period: no metric of its own, no MetricStat.
    (query,) = alarms["ProviderFailureAlarm"]["Metrics"]
    assert {"Namespace", "MetricName", "Statistic", "Period", "Dimensions"}.isdisjoint(alarms["ProviderFailureAlarm"])
    assert "MetricStat" not in query and query["Period"] == 300 and query["ReturnData"] is True
    assert metrics_insights(query["Expression"]) is not None
    spend = alarms["HourlySpendAlarm"]
    assert (spend["Namespace"], spend["MetricName"], spend["Statistic"], spend["Period"]) == ("Costroute", "CostUSD", "Sum", 3600)


def test_alarm_actions_only_with_a_topic(template: dict, defaults: Rendered) -> None:
    for alarm in defaults.resources_of_type("AWS::CloudWatch::Alarm").values():
        assert "AlarmActions" not in alarm["Properties"] and "OKActions" not in alarm["Properties"]
    topic = FULL_CONFIGURATION["AlarmTopicArn"]
    for alarm in Rendered(template, AlarmTopicArn=topic).resources_of_type("AWS::CloudWatch::Alarm").values():
        assert alarm["Properties"]["AlarmActions"] == [topic]
        assert alarm["Properties"]["OKActions"] == [topic]
    with pytest.raises(ParameterRejected):
        Rendered(template, AlarmTopicArn="my-topic")


# --------------------------------------------------------------------------- events


def _decoded_body(event: dict) -> str | None:
    """An event's body as text, base64 decoded when the event says so."""
    body = event["body"]
    if body is None:
        return None
    if event["isBase64Encoded"]:
        return base64.b64decode(body).decode("utf-8")
    return body


def test_expected_event_files_exist(events: dict[str, dict]) -> None:
    assert EXPECTED_EVENT_FILES <= set(events)


def test_events_have_the_api_gateway_rest_shape(events: dict[str, dict], api_events: dict) -> None:
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


def test_event_bodies(events: dict[str, dict]) -> None:
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


def test_events_are_accepted_by_aws_wsgi(events: dict[str, dict]) -> None:
    awsgi = pytest.importorskip("awsgi")
    for name, event in events.items():
        environ = awsgi.environ(event, None)
        assert environ["REQUEST_METHOD"] == event["httpMethod"], name
        assert environ["PATH_INFO"] == event["path"], name
        body = environ["wsgi.input"].read()
        assert int(environ["CONTENT_LENGTH"]) == len(body), name
        if event["body"] is not None:
            json.loads(body)
