"""Lightning callbacks: per-sample monitors, DDP-correct."""

from lit_info.callbacks.memorization import MemorizationMonitor

__all__ = ["MemorizationMonitor"]
