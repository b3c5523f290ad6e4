"""`python -m tristage.cli.githook pre-receive|post-receive --home H --project P`: the
entry the hosted repositories' hooks run (see `edges/git.py`, `hook_script`)."""

from __future__ import annotations

from .deploys import receive_main

if __name__ == "__main__":
    receive_main()
