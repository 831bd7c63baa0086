"""LightningDataModules, one file per data family."""

from lit_info.data.images import NoisyImageDataModule

__all__ = ["NoisyImageDataModule"]
