"""The MIMIC-III clinical benchmarks (Harutyunyan et al., Scientific Data 2019).

* ``python -m lit_info.data.mimic3 build --mimic-dir DIR --out OUT``: raw MIMIC-III v1.4 tables
  -> the benchmark's per-subject episodes and five tasks (:mod:`.pipeline`).
* :class:`~lit_info.data.mimic3.datamodule.Mimic3DataModule`: a task as a LightningDataModule.
* :mod:`.features`: the discretizer, normalizer and hand-crafted features.

Importing this package is light (no torch); the datamodule is imported on first use.
"""
