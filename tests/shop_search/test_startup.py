"""A Django process imports torch, open_clip and scikit-learn only where it uses them, so
`migrate`, the demo's commands and the web server (until it loads the model for search)
start in about a second instead of several (bench/README.md, "The first ten minutes")."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "open_clip", "torchvision", "sklearn")

STARTUP = """
import json, sys
import django
django.setup()
from django.core.management import get_commands, load_command_class
from django.urls import get_resolver
get_resolver().url_patterns  # every view, the admin, the API
commands = get_commands()
for name in ("migrate", "run_demo", "prepare_demo", "train_demo_model", "runserver"):
    load_command_class(commands[name], name)
print(json.dumps(sorted(module for module in sys.argv[1:] if module in sys.modules)))
"""


def test_starting_django_imports_no_model_library():
    env = {
        **os.environ,
        # The settings bin/demo runs with (the test settings import torch themselves); a
        # database that is never connected to.
        "DJANGO_SETTINGS_MODULE": "shop_search.settings.dev",
        "DATABASE_URL": "postgres://nobody@localhost:9/nothing",
    }
    done = subprocess.run(
        [sys.executable, "-c", STARTUP, *HEAVY],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(done.stdout.splitlines()[-1]) == []
