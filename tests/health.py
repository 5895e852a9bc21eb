"""Reading /health in tests."""

from __future__ import annotations

from typing import Any


def provider_entry(health: dict[str, Any], name: str) -> dict[str, Any]:
    """The /health entry of one provider."""
    for entry in health["providers"]:
        if entry["name"] == name:
            found: dict[str, Any] = entry
            return found
    raise AssertionError(f"no provider {name!r} in /health: {[e['name'] for e in health['providers']]}")
