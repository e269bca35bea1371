"""Running a tools/browser script: headless Chromium driven by playwright-core (bin/test
installs both), against the test's live server; the script's last line is its JSON report."""

import json
import os
import shutil
import subprocess
from pathlib import Path

SCRIPT_DIR = Path(__file__).resolve().parents[2] / "tools" / "browser"


def browser_report(script: str, *args: str) -> dict:
    """Run `script` (e.g. "shop.mjs") with `args`; SHOP_SCREENSHOTS names where it saves its
    screenshots (none when unset)."""
    assert shutil.which("node"), "bin/test installs node's dependencies; node is missing"
    run = subprocess.run(
        ["node", str(SCRIPT_DIR / script), *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=SCRIPT_DIR,
        env={**os.environ, "SCREENSHOTS": os.environ.get("SHOP_SCREENSHOTS", "")},
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])
