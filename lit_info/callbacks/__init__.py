"""Lightning callbacks: per-sample monitors, DDP-correct."""

from lit_info.callbacks.disentanglement import DisentanglementMonitor
from lit_info.callbacks.memorization import MemorizationMonitor
from lit_info.callbacks.predictions import PredictionWriter
from lit_info.callbacks.sample_information import SampleInformation

__all__ = ["DisentanglementMonitor", "MemorizationMonitor", "PredictionWriter", "SampleInformation"]
