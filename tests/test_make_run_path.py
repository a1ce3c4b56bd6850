"""The `make run` path: with DATABASE_URL unset, an embedded PostgreSQL serves the portal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

RENDER_DASHBOARDS = """
import django
django.setup()
from django.db import connection
from django.test import Client
from rollouts.models import User
with connection.cursor() as c:
    c.execute("SELECT current_setting('data_directory'), current_setting('server_version_num')::int")
    print("DATA_DIR", c.fetchone())
client = Client(HTTP_HOST="127.0.0.1")
for email, url in [("northern-lights-energy@demo.chfw", "/ssi/"), ("csp-north@demo.chfw", "/ssmi/")]:
    client.force_login(User.objects.get(email=email))
    r = client.get(url)
    print("PAGE", url, r.status_code, "Rollouts in flight" in r.text)
"""


def test_embedded_postgresql_serves_the_portal(tmp_path):
    data_dir = tmp_path / "pg"
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "PORTAL_TESTING"}}
    env["DEBUG"] = "true"
    started = subprocess.run(
        [sys.executable, "-m", "chfw_portal.devdb", "start", str(data_dir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode == 0, started.stderr
    try:
        env["DATABASE_URL"] = started.stdout.strip()
        env["PORTAL_REQUIRE_MFA"] = "false"
        for command in (["migrate", "--no-input"], ["seed_demo"]):
            done = subprocess.run(
                [sys.executable, "manage.py", *command],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=240,
            )
            assert done.returncode == 0, done.stderr
        assert "northern-lights-energy@demo.chfw" in done.stdout  # the demo sign-ins are printed
        env["DJANGO_SETTINGS_MODULE"] = "chfw_portal.settings"
        rendered = subprocess.run(
            [sys.executable, "-c", RENDER_DASHBOARDS],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert rendered.returncode == 0, rendered.stderr
        out = rendered.stdout
        # the connection really goes to the embedded server (its data directory, PostgreSQL 18)
        data_line = next(line for line in out.splitlines() if line.startswith("DATA_DIR"))
        assert str(data_dir) in data_line and ", 18" in data_line
        assert "PAGE /ssi/ 200 True" in out and "PAGE /ssmi/ 200 True" in out
    finally:
        subprocess.run(
            [sys.executable, "-m", "chfw_portal.devdb", "stop", str(data_dir)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            timeout=60,
        )
