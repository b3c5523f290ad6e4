"""tristage: a self-hosted, git-driven three-environment deployment platform."""

__version__ = "0.1.0"
