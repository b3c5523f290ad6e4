"""`[sanitize.files]`: a pattern matching every file copies production's whole data
directory into clones; the patterns themselves are checked by the schema.
"""

from __future__ import annotations

from collections.abc import Iterator

from .. import data_files
from ._base import WARNING, Context, Finding


def check(ctx: Context) -> Iterator[Finding]:
    """`[sanitize.files] copy` patterns that match every file copy production's whole
    data directory, unsanitized, into every clone."""
    rule = ctx.config.sanitize_files
    if rule is None:
        return
    environment = ctx.production or next(iter(ctx.config.environments), "-")
    for pattern in rule.copy_:
        if data_files.copies_everything(pattern):
            yield Finding(
                "sanitize_files.copies-everything",
                WARNING,
                environment,
                None,
                f"[sanitize.files] copy {pattern!r} matches every file, so a clone copies "
                "all of production's files (uploads may hold personal data); name the "
                'folders that are public instead in tristage.toml, e.g. copy = ["public/**"]',
            )
