"""Runtimes: where releases run. `local` runs them as processes on loopback ports."""

from .local import Process, alive, free_port, proc_start, spawn, stop

__all__ = ["Process", "alive", "free_port", "proc_start", "spawn", "stop"]
