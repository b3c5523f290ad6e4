"""What a hidden value is shown as: in listings, logs and exports (a module of its own,
so the log pump of every release imports the redactor without the configuration
schema)."""

MASK = "****"
