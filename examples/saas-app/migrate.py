"""Bring the database at $DATABASE_URL to the latest schema: `python migrate.py`.

Idempotent and safe to run concurrently; tristage runs it before a new release takes traffic.
"""

import sys

from saasapp.database import Database, DatabaseUnavailable, DatabaseURL
from saasapp.schema import LATEST, current_version, migrate


def main() -> int:
    import os

    try:
        url = DatabaseURL.parse(os.environ.get("DATABASE_URL"))
        with Database(url).connect() as conn:
            before = current_version(conn)
            applied = migrate(conn)
    except (ValueError, DatabaseUnavailable) as exc:
        print(f"migrate: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ValueError) else 1
    where = url.describe()
    if applied:
        for m in applied:
            print(f"migrate: applied {m.version:04d} {m.description} ({where})")
    else:
        print(f"migrate: up to date at version {before or LATEST} ({where})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
