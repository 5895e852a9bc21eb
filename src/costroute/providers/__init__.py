"""Provider kinds: the table of what the registry document's ``kind`` may name.

Adding a kind is one module exposing ``KIND`` (see ``base.ProviderKind``) and one entry here. A
kind's module is imported only when a registry uses the kind, and its SDK only when one of its
models is first called, so a mock-only deployment imports none of them.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from costroute.providers.base import ProviderKind

# kind -> the module that implements it
PROVIDER_KINDS: Mapping[str, str] = {
    "mock": "costroute.providers.mock",
    "openai": "costroute.providers.openai",
    "anthropic": "costroute.providers.anthropic",
    "bedrock": "costroute.providers.bedrock",
}


def load_kind(kind: str) -> ProviderKind:
    """The kind's ``KIND`` object, importing its module on first use."""
    module = importlib.import_module(PROVIDER_KINDS[kind])
    found: ProviderKind = module.KIND
    return found


class KindCatalog(Mapping[str, ProviderKind]):
    """The kinds of ``PROVIDER_KINDS`` as a mapping that imports a kind's module only when it is looked up."""

    def __getitem__(self, kind: str) -> ProviderKind:
        if kind not in PROVIDER_KINDS:
            raise KeyError(kind)
        return load_kind(kind)

    def __iter__(self) -> Iterator[str]:
        return iter(PROVIDER_KINDS)

    def __len__(self) -> int:
        return len(PROVIDER_KINDS)


KINDS = KindCatalog()
