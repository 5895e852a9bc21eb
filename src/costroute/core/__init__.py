"""The pure core: registry, estimation and selection.

Rules (enforced by tests/unit/test_architecture.py): stdlib only; no IO, no os.environ, no clock,
no Flask, boto3 or openai.
"""
