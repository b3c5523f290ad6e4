"""Bring the database at $DATABASE_URL to the latest schema: `python migrate.py`.

`python migrate.py --dry-run` lists the pending migrations and applies nothing
(tristage's promotion preflight runs it against production's database).

Idempotent and safe to run concurrently; tristage runs it before a new release takes traffic.
"""

import sys

from saasapp.database import Database, DatabaseUnavailable, DatabaseURL
from saasapp.schema import LATEST, current_version, migrate, pending


def main() -> int:
    import os

    try:
        url = DatabaseURL.parse(os.environ.get("DATABASE_URL"))
        with Database(url).connect() as conn:
            before = current_version(conn)
            if "--dry-run" in sys.argv[1:]:
                todo = pending(conn)
                for m in todo:
                    print(f"migrate: pending {m.version:04d} {m.description}")
                if not todo:
                    print(f"migrate: up to date at version {before or LATEST}")
                return 0
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
