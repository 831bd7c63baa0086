"""LightningModules, one file per method."""

from lit_info.methods.classifier import Classifier
from lit_info.methods.clinical import ClinicalLinear, ClinicalLSTM, ClinicalMultitask
from lit_info.methods.corex_module import CorexModule
from lit_info.methods.gcn import GCN
from lit_info.methods.limit import LIMIT
from lit_info.methods.minsyn import BetaVAE, MinSyn
from lit_info.methods.mixhop import MixHop
from lit_info.methods.tcorex_module import TCorexModule

__all__ = [
    "GCN",
    "LIMIT",
    "BetaVAE",
    "Classifier",
    "ClinicalLSTM",
    "ClinicalLinear",
    "ClinicalMultitask",
    "CorexModule",
    "MinSyn",
    "MixHop",
    "TCorexModule",
]
