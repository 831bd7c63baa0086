"""LightningDataModules, one file per data family.

The datamodules are imported lazily (on first attribute access), so that light tools such as
the MIMIC-III pipeline (``python -m lit_info.data.mimic3``) start without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LOCATIONS = {
    "CitationGraphDataModule": "lit_info.data.citation",
    "HomophilyGraphDataModule": "lit_info.data.citation",
    "Mimic3DataModule": "lit_info.data.mimic3.datamodule",
    "NoisyImageDataModule": "lit_info.data.images",
    "TimeSeriesDataModule": "lit_info.data.timeseries",
    "WordImageDataModule": "lit_info.data.words",
}

__all__ = sorted(_LOCATIONS)


def __getattr__(name: str) -> Any:
    if name in _LOCATIONS:
        return getattr(importlib.import_module(_LOCATIONS[name]), name)
    raise AttributeError(f"module 'lit_info.data' has no attribute {name!r}")
