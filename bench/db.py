"""Databases for `make bench` (no Django needed).

python -m bench.db inv-url URL   # prints URL with "_inv" appended to the database name
python -m bench.db ensure URL    # creates the database of URL when it is missing
"""

from __future__ import annotations

import sys
from urllib.parse import urlsplit, urlunsplit


def inv_url(url: str) -> str:
    """The second bench database (load_inventory into an empty hub table): NAME -> NAME_inv."""
    return suffixed_url(url, "inv")


def suffixed_url(url: str, suffix: str) -> str:
    """NAME -> NAME_suffix: a bench module's own database, so its estate leaves the others' figures alone."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/") or "chfw_bench"
    return urlunsplit(parts._replace(path=f"/{name}_{suffix}"))


def use_own_database(suffix: str) -> str:
    """Point DATABASE_URL (default chfw_bench) at NAME_suffix, created and migrated when needed; before
    Django is set up. Returns the URL."""
    import os
    import subprocess
    from pathlib import Path

    url = suffixed_url(
        os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/chfw_bench"), suffix
    )
    ensure(url)
    os.environ["DATABASE_URL"] = url
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"], cwd=root, check=True)
    return url


CONDITIONS = ("shared_buffers", "max_wal_size", "wal_compression", "checkpoint_timeout")


def conditions() -> str:
    """What a figure depends on besides the code, to print before it: the server settings that move
    the 50,000-hub figures most, and this machine's speed (a 20-million-step Python loop). Needs Django."""
    from time import perf_counter

    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%s) ORDER BY 1",
            [list(CONDITIONS)],
        )
        settings = ", ".join(f"{name} {value}" for name, value in cursor.fetchall())
        cursor.execute("SELECT setting::bigint * 8192 FROM pg_settings WHERE name = 'shared_buffers'")
        shared_buffers = cursor.fetchone()[0]
    start = perf_counter()
    total = 0
    for n in range(20_000_000):
        total += n
    said = f"PostgreSQL {settings}; Python loop of 20M additions {perf_counter() - start:.2f} s"
    if shared_buffers < 2**30:
        said += (
            "\nThis server has a stock-sized shared_buffers: the 50,000-hub targets are measured with the"
            ' settings of the README\'s "Running in production" (its "Figures" give both).'
        )
    return said


def ensure(url: str) -> bool:
    """Create the database named in `url` if it does not exist; True when it was created."""
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if not name:
        raise SystemExit(f"{url}: no database name")
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:  # CREATE DATABASE cannot run in a transaction
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return True


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in {"inv-url", "ensure"}:
        print(__doc__, file=sys.stderr)
        return 2
    if argv[1] == "inv-url":
        print(inv_url(argv[2]))
    elif ensure(argv[2]):
        print(f"Created database {urlsplit(argv[2]).path.lstrip('/')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
