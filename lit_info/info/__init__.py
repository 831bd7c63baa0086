"""Information measures of training samples: Jacobians, empirical NTK, linearized training, SUI."""

from .jacobian import (
    countsketch_hashes,
    flatten_parameters,
    network_jacobian,
    parameter_names,
    sketch_matrix,
)
from .linearized import (
    eigh_kernel,
    linearized_gd,
    linearized_weights,
    predict,
    reference_coefficients,
    spectral_filter,
    train_coefficients,
)
from .ntk import empirical_ntk, flatten_jacobian, kernel_blocks, unflatten_outputs
from .sample_info import (
    functional_si,
    leave_one_out_coefficients,
    leave_one_out_differences,
    reference_leave_one_out,
    smooth_unique_information,
    weight_si,
    weight_si_from_jacobian,
)
from .structured_ntk import structured_ntk, structured_ntk_pair

__all__ = [
    "countsketch_hashes",
    "eigh_kernel",
    "empirical_ntk",
    "flatten_jacobian",
    "flatten_parameters",
    "functional_si",
    "kernel_blocks",
    "leave_one_out_coefficients",
    "leave_one_out_differences",
    "linearized_gd",
    "linearized_weights",
    "network_jacobian",
    "parameter_names",
    "predict",
    "reference_coefficients",
    "reference_leave_one_out",
    "sketch_matrix",
    "smooth_unique_information",
    "spectral_filter",
    "structured_ntk",
    "structured_ntk_pair",
    "train_coefficients",
    "unflatten_outputs",
    "weight_si",
    "weight_si_from_jacobian",
]
