"""The seed's way to run the service: ``export FLASK_APP=app.py; flask run --port 8000``.

It is the same app as ``costroute.wsgi:app`` (mock provider by default, settings from the
environment); the package lives in ``src/``, so this file puts it on the path when the project is
not installed (a plain ``pip install -r requirements.txt``).
"""

import os
import sys

try:
    import costroute  # noqa: F401  (installed: make setup, pip install -e .)
except ImportError:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))

from costroute.entry import build_app

app = build_app()
