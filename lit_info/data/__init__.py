"""LightningDataModules, one file per data family."""

from lit_info.data.citation import CitationGraphDataModule, HomophilyGraphDataModule
from lit_info.data.images import NoisyImageDataModule
from lit_info.data.timeseries import TimeSeriesDataModule

__all__ = [
    "CitationGraphDataModule",
    "HomophilyGraphDataModule",
    "NoisyImageDataModule",
    "TimeSeriesDataModule",
]
