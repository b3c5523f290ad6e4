"""Fill the database at $DATABASE_URL with sample data: `python seed.py --count 25`.

Deterministic per --seed (default: the environment name), so running it twice adds nothing.
"""

import argparse
import os
import sys

from saasapp.database import Database, DatabaseUnavailable, DatabaseURL
from saasapp.schema import LATEST, current_version
from saasapp.seeding import seed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=25, help="users to create (default 25)")
    parser.add_argument(
        "--max-payments", type=int, default=3, help="payment attempts per user, at most (default 3)"
    )
    parser.add_argument(
        "--seed",
        default=os.environ.get("TRISTAGE_ENV") or "local",
        help="seed of the generator (default: $TRISTAGE_ENV)",
    )
    args = parser.parse_args()
    if not 0 <= args.count <= 100_000 or not 0 <= args.max_payments <= 100:
        parser.error("--count must be 0..100000 and --max-payments 0..100")
    try:
        url = DatabaseURL.parse(os.environ.get("DATABASE_URL"))
        with Database(url).connect() as conn:
            version = current_version(conn)
            if version is None or version < LATEST:
                print(
                    "seed: error: the schema is not migrated: run 'python migrate.py' first",
                    file=sys.stderr,
                )
                return 1
            result = seed(conn, args.count, args.seed, args.max_payments)
    except (ValueError, DatabaseUnavailable) as exc:
        print(f"seed: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ValueError) else 1
    print(
        f"seed: added {result.users} users and {result.payment_attempts} payment attempts "
        f"({url.describe()}, seed {args.seed!r})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
