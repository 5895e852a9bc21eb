"""Costroute: a cost-aware LLM router.

Importing the package has no side effects: no network, no environment reads, no heavy imports.
"""

__version__ = "0.1.0"
