"""The floor: a bare Flask app answering a small JSON POST, served the same way as ours.

``make bench`` puts it beside Costroute in process (through aws-wsgi) and over HTTP (under the same
``gunicorn.conf.py``): whatever Flask, aws-wsgi and gunicorn cost, this app pays too, so the ratio
of the two is what Costroute itself adds.
"""

from __future__ import annotations

from flask import Flask, jsonify, request

app = Flask("floor")


@app.post("/route")
def route():  # type: ignore[no-untyped-def]
    """Decode the JSON body and answer a small JSON object."""
    body = request.get_json(force=True)
    return jsonify({"model": "floor:echo", "input_chars": len(body.get("input", ""))})


@app.get("/health")
def health():  # type: ignore[no-untyped-def]
    """Ready."""
    return jsonify({"status": "ok"})
