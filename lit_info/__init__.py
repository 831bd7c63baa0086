"""lit_info: information-theoretic deep-learning methods as PyTorch Lightning modules."""

__version__ = "0.1.0"
