"""Models, providers and the registry document: parsing and whole-document validation.

A registry arrives as JSON in one of two shapes:

* the seed's list of models over the built-in providers (``mock`` and ``openai``), each a row
  ``[provider, name, quality, in_cost_per_1k, out_cost_per_1k, latency_ms, max_output_tokens]``
  or an object with those field names plus optional ones (rows and objects may be mixed);
* version 2, an object ``{"providers": {name: settings}, "models": [...]}`` whose providers
  each have a ``kind`` (a provider kind: ``mock``, ``openai``, ``anthropic``, ``bedrock``), an
  endpoint and a credential reference. The built-in providers stay available unless the
  document redefines their names.

A model's id is ``provider:name``, split at the first ``:``: provider names are lower-case
letters, digits, ``-`` and ``_``; model names may hold ``:``, ``/`` and ``.`` (``llama3.1:8b``,
``anthropic.claude-3-5-haiku-20241022-v1:0``). Prices are ``Decimal`` parsed from the JSON text
itself, so ``0.0001`` is exactly one ten-thousandth of a dollar; a price may be 0 when written as
0, and a missing price is refused, never taken as zero.

Each provider kind owns its own settings and model options (the mock's ``mock_*`` fields, the
OpenAI adapter's ``max_tokens_field``): the kind's rules, handed in as ``ProviderKindRules``,
validate them. The document is refused as a whole, with every error found, each naming the
provider or the model (by id, and by number from 1) and the field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any, NamedTuple, Protocol

from costroute.core.fields import DocumentError, FieldReader, json_type, load_json_document

ROW_FIELDS: tuple[str, ...] = (
    "provider",
    "name",
    "quality",
    "in_cost_per_1k",
    "out_cost_per_1k",
    "latency_ms",
    "max_output_tokens",
)
# Optional fields every model may carry, whatever its provider's kind.
COMMON_MODEL_FIELDS: tuple[str, ...] = (
    "upstream_model",
    "cached_input_cost_per_1k",
    "cache_write_cost_per_1k",
    "cache_write_1h_cost_per_1k",
)
# Provider settings every kind may take (each kind says which of them it accepts).
COMMON_PROVIDER_FIELDS: tuple[str, ...] = ("base_url", "api_key", "timeout_seconds")
PROVIDER_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# POSIX's names for the environment: no key (mixed case, '-') can pass for one.
ENV_VARIABLE_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")
# How the keys of common providers begin (OpenAI and Anthropic sk-, Groq gsk_, xAI, Perplexity,
# Hugging Face, Google, Replicate, NVIDIA): a secret id that begins so is a key pasted by mistake.
KEY_PREFIXES = ("sk-", "sk_", "gsk_", "xai-", "pplx-", "hf_", "AIza", "r8_", "nvapi-")
MIN_QUALITY = 1
MAX_QUALITY = 5
# No provider call may be allowed longer than Lambda's longest invocation.
MAX_PROVIDER_TIMEOUT_SECONDS = Decimal(900)


class RegistryError(DocumentError):
    """A registry document that cannot be used; the message names every wrong entry and field."""


class CredentialSource(StrEnum):
    """Where a provider's key comes from."""

    ENV = "env"
    SECRET = "secret"
    NONE = "none"  # the provider takes no key (a local server, the AWS role)
    MISSING = "missing"  # the provider needs a key and none is configured


class CredentialRef(NamedTuple):
    """A reference to a key, never the key: an environment variable or a Secrets Manager secret."""

    source: CredentialSource
    name: str | None = None
    # The JSON field of a secret that holds the key; a JSON secret needs one.
    field: str | None = None
    # A plain-text secret is the key even though ``field`` is set (the built-in openai provider's
    # OPENAI_API_KEY_SECRET_ID holds either the key or JSON with an OPENAI_API_KEY field).
    field_optional: bool = False
    hint: str | None = None  # for MISSING: how to configure one

    def describe(self) -> str:
        """Where the key comes from, for /health and messages: ``env:GROQ_API_KEY``, ``secretsmanager:x#field``."""
        if self.source is CredentialSource.ENV:
            return f"env:{self.name}"
        if self.source is CredentialSource.SECRET:
            return f"secretsmanager:{self.name}" + (f"#{self.field}" if self.field else "")
        return self.source.value


NO_KEY = CredentialRef(CredentialSource.NONE)


@dataclass(frozen=True)
class ProviderSpec:
    """One configured upstream: its kind, endpoint and credential reference."""

    name: str
    kind: str
    base_url: str | None = None
    api_key: CredentialRef = NO_KEY
    timeout_seconds: float | None = None
    # The kind's own settings (Bedrock's region and endpoint), parsed by the kind's rules.
    settings: Any = None
    builtin: bool = False


class ProviderKindRules(Protocol):
    """What a provider kind accepts in the document: its settings and its models' options."""

    # Which of COMMON_PROVIDER_FIELDS the kind takes, and whether it must have a key.
    common_fields: frozenset[str]
    api_key_required: bool
    own_fields: frozenset[str]
    model_fields: frozenset[str]

    def parse_settings(self, fields: FieldReader) -> Any:
        """The kind's own provider settings (``own_fields``), recording errors in ``fields``."""
        ...

    def parse_model_options(self, fields: FieldReader) -> Any:
        """The options a model of this kind may carry (``model_fields``), recording errors."""
        ...


@dataclass(frozen=True)
class Model:
    """One routable model with its prices (USD per 1,000 tokens) and limits."""

    provider: str
    name: str
    quality: int
    input_cost_per_1k: Decimal
    output_cost_per_1k: Decimal
    latency_ms: int
    max_output_tokens: int
    upstream_model: str | None = None
    # Cache reads, cache writes (5-minute or unspecified TTL) and 1-hour cache writes, when the
    # provider bills them apart; None means "priced at the full input price" (and said so).
    cached_input_cost_per_1k: Decimal | None = None
    cache_write_cost_per_1k: Decimal | None = None
    cache_write_1h_cost_per_1k: Decimal | None = None
    # The adapter's own options for this model, parsed by its kind's rules.
    options: Any = None
    # Derived once, because selection reads them for every model of every request: the id
    # ``provider:name`` and the exact prices per single token (a Decimal division is not cheap).
    id: str = field(init=False, compare=False)
    input_cost_per_token: Decimal = field(init=False, compare=False, repr=False)
    output_cost_per_token: Decimal = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", f"{self.provider}:{self.name}")
        object.__setattr__(self, "input_cost_per_token", self.input_cost_per_1k / 1000)
        object.__setattr__(self, "output_cost_per_token", self.output_cost_per_1k / 1000)

    @property
    def upstream(self) -> str:
        """The model name sent to the provider."""
        return self.upstream_model or self.name


class AmbiguousModel(LookupError):
    """A bare model name that several models of the registry share."""

    def __init__(self, name: str, ids: Iterable[str]) -> None:
        self.name = name
        self.ids = tuple(ids)
        super().__init__(f"model '{name}' is ambiguous: {', '.join(self.ids)}")


@dataclass(frozen=True)
class Registry:
    """A validated, non-empty set of models with unique ids, and the providers they use."""

    models: tuple[Model, ...]
    providers: Mapping[str, ProviderSpec] = field(default_factory=dict)
    # Models listed but skipped by routing (``auto`` and /route), with why; they can be pinned.
    routing_excluded: Mapping[str, str] = field(default_factory=dict)
    by_id: Mapping[str, Model] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_id", {model.id: model for model in self.models})

    def get(self, model_id: str) -> Model | None:
        """The model with this id, or None."""
        return self.by_id.get(model_id)

    def resolve(self, name: str) -> Model | None:
        """The model a client named: its id, else the one model whose name or upstream name it is.

        Raises AmbiguousModel when several models share that name; None when none has it.
        """
        model = self.by_id.get(name)
        if model is not None:
            return model
        matches = [m for m in self.models if name in (m.name, m.upstream)]
        if len(matches) > 1:
            raise AmbiguousModel(name, (m.id for m in matches))
        return matches[0] if matches else None


def parse_registry_text(
    text: str, kinds: Mapping[str, ProviderKindRules], builtins: Mapping[str, ProviderSpec]
) -> Registry:
    """Parse and validate registry JSON text; raise RegistryError naming every wrong entry and field."""
    data = load_json_document(text, RegistryError, "the registry")
    return build_registry(data, kinds, builtins)


def looks_like_key(text: str) -> bool:
    """Whether a reference is shaped like a provider's API key rather than a name."""
    return text.startswith(KEY_PREFIXES)


def build_registry(
    data: Any, kinds: Mapping[str, ProviderKindRules], builtins: Mapping[str, ProviderSpec]
) -> Registry:
    """Validate a decoded registry (the seed's list, or a version-2 object) as a whole."""
    errors: list[str] = []
    providers: dict[str, ProviderSpec] = dict(builtins)
    if isinstance(data, dict):
        top = FieldReader(data, "registry", errors)
        top.refuse_unknown(("providers", "models"))
        declared = top.mapping("providers") or {}
        for name, settings in declared.items():
            spec = _parse_provider(name, settings, kinds, errors)
            if spec is not None:
                providers[name] = spec
        entries = data.get("models")
        if not isinstance(entries, list):
            errors.append(f"registry: field 'models' must be an array of models, got {json_type(entries)}")
            entries = []
        label = "model"
    elif isinstance(data, list):
        entries, label = data, "entry"
    else:
        raise RegistryError([f"registry must be a JSON array of models or an object with 'providers' and "
                             f"'models', got {json_type(data)}"])
    if not entries and not errors:
        errors.append("registry is empty: it must list at least one model")
    models: list[Model] = []
    seen: dict[str, int] = {}
    for number, entry in enumerate(entries, start=1):
        model = _parse_model(f"{label} {number}", entry, providers, kinds, errors)
        if model is None:
            continue
        if model.id in seen:
            errors.append(f"{label} {number} ({model.id}): its id duplicates {label} {seen[model.id]}")
            continue
        seen[model.id] = number
        models.append(model)
    if errors:
        raise RegistryError(errors)
    return Registry(models=tuple(models), providers=providers)


def _parse_provider(
    name: Any, settings: Any, kinds: Mapping[str, ProviderKindRules], errors: list[str]
) -> ProviderSpec | None:
    label = f"provider '{name}'"
    if not isinstance(name, str) or not PROVIDER_NAME.match(name):
        errors.append(f"{label}: a provider name must be lower-case letters, digits, '-' and '_' (at most 63)")
        return None
    if not isinstance(settings, dict):
        errors.append(f"{label}: its settings must be an object, got {json_type(settings)}")
        return None
    fields = FieldReader(settings, label, errors)
    kind = fields.text("kind", required=True)
    if kind is None:
        return None
    rules = kinds.get(kind)
    if rules is None:
        fields.error(f"field 'kind' is '{kind}', which is not a provider kind ({', '.join(sorted(kinds))})")
        return None
    # A field the kind does not take is refused: Bedrock, say, takes no api_key (it uses the AWS role).
    fields.refuse_unknown({"kind", *rules.common_fields, *rules.own_fields})
    base_url = fields.url("base_url")
    api_key = _parse_credential(fields, rules.api_key_required)
    timeout = fields.number("timeout_seconds", minimum=Decimal(0), exclusive_minimum=True,
                            maximum=MAX_PROVIDER_TIMEOUT_SECONDS)
    own = rules.parse_settings(fields)
    return ProviderSpec(
        name=name,
        kind=kind,
        base_url=base_url,
        api_key=api_key if "api_key" in rules.common_fields else NO_KEY,
        timeout_seconds=float(timeout) if timeout is not None else None,
        settings=own,
    )


def _parse_credential(fields: FieldReader, required: bool) -> CredentialRef:
    value = fields.values.get("api_key")
    if value is None:
        if required:
            fields.error("field 'api_key' is missing: give {\"env\": \"VAR\"} or {\"secret_id\": \"name-or-arn\"}")
        return NO_KEY
    if isinstance(value, str):
        fields.error("field 'api_key' must reference the key ({\"env\": \"VAR\"} or {\"secret_id\": \"...\"}); "
                     "a key is never written inline in the document")
        return NO_KEY
    if not isinstance(value, dict):
        fields.error(f"field 'api_key' must be an object, got {json_type(value)}")
        return NO_KEY
    reference = FieldReader(value, f"{fields.label}: field 'api_key'", fields.errors)
    if set(value) == {"env"}:
        variable = reference.text("env", required=True)
        if variable is not None and not ENV_VARIABLE_NAME.fullmatch(variable):
            # Never the value itself: a key pasted here would reach /health and every 503.
            reference.error(f"'env' must be an environment variable name: upper-case letters, digits and '_', at "
                            f"most 128 characters (got {len(variable)} characters that are not one)")
            return NO_KEY
        return CredentialRef(CredentialSource.ENV, name=variable) if variable else NO_KEY
    if "secret_id" in value and set(value) <= {"secret_id", "field"}:
        secret_id = reference.text("secret_id", required=True)
        if secret_id is not None and looks_like_key(secret_id):
            reference.error("'secret_id' looks like an API key, not a secret's name or ARN: a key is never written "
                            "in the document")
            return NO_KEY
        field_name = reference.text("field")
        return CredentialRef(CredentialSource.SECRET, name=secret_id, field=field_name) if secret_id else NO_KEY
    fields.error("field 'api_key' must be {\"env\": \"VAR\"} or {\"secret_id\": \"name-or-arn\"} with an optional "
                 f"\"field\", got the fields {', '.join(sorted(value)) or 'none'}")
    return NO_KEY


def _parse_model(
    label: str,
    entry: Any,
    providers: Mapping[str, ProviderSpec],
    kinds: Mapping[str, ProviderKindRules],
    errors: list[str],
) -> Model | None:
    if isinstance(entry, list):
        if len(entry) != len(ROW_FIELDS):
            errors.append(f"{label}: a row must have {len(ROW_FIELDS)} fields [{', '.join(ROW_FIELDS)}], "
                          f"got {len(entry)}")
            return None
        values: Mapping[str, Any] = dict(zip(ROW_FIELDS, entry, strict=True))
    elif isinstance(entry, dict):
        values = entry
    else:
        errors.append(f"{label}: must be an array or an object, got {json_type(entry)}")
        return None
    fields = FieldReader(values, label, errors)
    provider = fields.text("provider", required=True)
    name = fields.text("name", required=True)
    if provider is not None and name is not None:
        fields.label = label = f"{label} ({provider}:{name})"
    spec = providers.get(provider) if provider is not None else None
    if provider is not None and spec is None:
        fields.error(f"field 'provider' is '{provider}', which is not a provider of the registry "
                     f"({', '.join(sorted(providers))})")
    rules = kinds.get(spec.kind) if spec is not None else None
    if isinstance(entry, dict) and rules is not None:
        fields.refuse_unknown({*ROW_FIELDS, *COMMON_MODEL_FIELDS, *rules.model_fields})
    quality = fields.integer("quality", required=True, minimum=MIN_QUALITY, maximum=MAX_QUALITY)
    input_cost = fields.price("in_cost_per_1k")
    output_cost = fields.price("out_cost_per_1k")
    latency = fields.integer("latency_ms", required=True, minimum=1)
    max_tokens = fields.integer("max_output_tokens", required=True, minimum=1)
    upstream = fields.text("upstream_model")
    cached = fields.price("cached_input_cost_per_1k", required=False)
    write = fields.price("cache_write_cost_per_1k", required=False)
    write_1h = fields.price("cache_write_1h_cost_per_1k", required=False)
    options = rules.parse_model_options(fields) if rules is not None else None
    if None in (provider, name, quality, input_cost, output_cost, latency, max_tokens) or spec is None:
        return None
    assert provider is not None and name is not None and quality is not None and latency is not None
    assert input_cost is not None and output_cost is not None and max_tokens is not None
    return Model(
        provider=provider,
        name=name,
        quality=quality,
        input_cost_per_1k=input_cost,
        output_cost_per_1k=output_cost,
        latency_ms=latency,
        max_output_tokens=max_tokens,
        upstream_model=upstream,
        cached_input_cost_per_1k=cached,
        cache_write_cost_per_1k=write,
        cache_write_1h_cost_per_1k=write_1h,
        options=options,
    )


# The built-in registry. Tiers are priced so the seed's haiku request (min_quality 3, budget
# $0.002, latency 1000 ms) lands on mock:advanced: standard is below the quality floor and
# premium is over both the budget and the latency limit.
DEFAULT_REGISTRY_ROWS: tuple[tuple[Any, ...], ...] = (
    ("mock", "basic", 1, "0.0001", "0.0002", 150, 1024),
    ("mock", "standard", 2, "0.0005", "0.0015", 300, 2048),
    ("mock", "advanced", 4, "0.0025", "0.006", 500, 4096),
    ("mock", "premium", 5, "0.01", "0.03", 1500, 8192),
)


def default_registry_rows() -> list[list[Any]]:
    """The built-in registry as rows in the seed's format, prices as exact Decimals."""
    return [[p, n, q, Decimal(i), Decimal(o), lat, mx] for p, n, q, i, o, lat, mx in DEFAULT_REGISTRY_ROWS]


def default_registry_json() -> str:
    """The built-in registry in the seed's row format, as JSON text."""
    return json.dumps(default_registry_rows(), default=_decimal_to_json_number)


def _decimal_to_json_number(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
