import pytest
import torch

from lit_info.info import empirical_ntk, flatten_jacobian, kernel_blocks, unflatten_outputs


def test_ntk_matches_explicit_inner_products():
    torch.manual_seed(0)
    j1 = torch.randn(4, 3, 10, dtype=torch.float64)
    j2 = torch.randn(2, 3, 10, dtype=torch.float64)
    theta = empirical_ntk(j1)
    cross = empirical_ntk(j2, j1)
    assert theta.shape == (12, 12) and cross.shape == (6, 12)
    for i in range(4):
        for c in range(3):
            for j in range(4):
                for d in range(3):
                    expected = torch.dot(j1[i, c], j1[j, d])
                    torch.testing.assert_close(theta[i * 3 + c, j * 3 + d], expected)
    torch.testing.assert_close(cross[1 * 3 + 2, 3 * 3 + 0], torch.dot(j2[1, 2], j1[3, 0]))
    assert torch.equal(theta, theta.T)
    assert torch.linalg.eigvalsh(theta).min() > -1e-10
    blocks = kernel_blocks(cross, 3)
    assert blocks.shape == (2, 4, 3, 3)
    torch.testing.assert_close(blocks[1, 3], j2[1] @ j1[3].T)


def test_dtype_and_reshaping_helpers():
    j = torch.randn(3, 2, 5)
    assert empirical_ntk(j, dtype=torch.float64).dtype == torch.float64
    flat = flatten_jacobian(j)
    assert torch.equal(flat[2 * 2 + 1], j[2, 1])
    values = torch.arange(12.0).reshape(2, 6)
    assert unflatten_outputs(values, 3).shape == (2, 2, 3)


def test_bad_shapes():
    with pytest.raises(ValueError, match="jacobian"):
        empirical_ntk(torch.randn(3, 5))
    with pytest.raises(ValueError, match="agree"):
        empirical_ntk(torch.randn(3, 2, 5), torch.randn(3, 2, 6))
    with pytest.raises(ValueError, match="num_outputs"):
        unflatten_outputs(torch.zeros(7), 3)
    with pytest.raises(ValueError, match="kernel"):
        kernel_blocks(torch.zeros(6, 5), 3)
