"""Kronecker expansion equals the naive sum of torch.kron products, for every kind and width multiple.

The fast paths run on the ``device`` fixture (cpu, or cuda under scripts/gpu_check.sh); the naive reference
always runs on the CPU.
"""

import zlib

import pytest
import torch

from wave_deploy.wave.geometry import KINDS, axis_sizes, tiling
from wave_deploy.wave.kron import expand, expand_vec, project, project_vec

W = 8  # template size
MULTIPLES = (1, 2, 3, 6)  # target width / template size
C, P = 3, 4  # in_chans, patch_size
TOKENS, CLASSES = 17, 5


def _ints(*shape, gen):
    """Small random integers in float64: every product and sum is exact, whatever the summation order."""
    return torch.randint(-8, 9, shape, generator=gen).double()


def _naive(S, T):
    # S (N, a, b), T (N, u, v): sum_t kron(S[t], T[t])
    return sum(torch.kron(S[t], T[t]) for t in range(S.shape[0]))


def _matrix_kinds(d):
    """kind -> (template shape (u, v), scaler grid (a, b)) for target width d, from the kinds table."""
    sizes = axis_sizes(
        embed_dim=d, mlp_hidden=4 * d, in_chans=C, patch_size=P, tokens=TOKENS, classes=CLASSES
    )
    return {name: tiling(kind, sizes, W) for name, kind in KINDS.items() if not kind.vector}


@pytest.mark.parametrize("multiple", MULTIPLES)
@pytest.mark.parametrize("kind", list(_matrix_kinds(W)))
def test_expand_equals_sum_of_kron_exactly_for_every_matrix_kind(kind, multiple, device):
    gen = torch.Generator().manual_seed(zlib.crc32(kind.encode()) + multiple)
    (u, v), (a, b) = _matrix_kinds(W * multiple)[kind]
    depth, n = 3, 4
    S, T = _ints(depth, n, a, b, gen=gen), _ints(n, u, v, gen=gen)
    W_fast = expand(S.to(device), T.to(device)).cpu()  # all layers at once
    assert W_fast.shape == (depth, a * u, b * v)
    for layer in range(depth):
        assert torch.equal(W_fast[layer], _naive(S[layer], T))


@pytest.mark.parametrize("multiple", MULTIPLES)
@pytest.mark.parametrize("length", [1, 3, 4])  # vector length in units of d: D, 3D (qkv bias), 4D (fc1 bias)
def test_expand_vec_equals_sum_of_kron_exactly(length, multiple, device):
    gen = torch.Generator().manual_seed(100 * length + multiple)
    m, n, depth = length * multiple * W, 3, 2
    s, t = _ints(depth, n, m // W, gen=gen), _ints(n, W, gen=gen)
    fast = expand_vec(s.to(device), t.to(device)).cpu()
    assert fast.shape == (depth, m)
    for layer in range(depth):
        assert torch.equal(fast[layer], _naive(s[layer], t))  # torch.kron of 1-D tensors


def test_expand_matches_kron_on_gaussian_values_to_fp64_rounding(device):
    gen = torch.Generator().manual_seed(0)
    S, T = (
        torch.randn(2, 5, 18, 6, generator=gen, dtype=torch.float64),
        torch.randn(5, 8, 8, generator=gen, dtype=torch.float64),
    )
    fast = expand(S.to(device), T.to(device)).cpu()
    for layer in range(2):
        torch.testing.assert_close(fast[layer], _naive(S[layer], T), rtol=0, atol=1e-13)


def test_expand_tile_is_weighted_template_mix():
    gen = torch.Generator().manual_seed(1)
    S, T = torch.randn(3, 2, 4, generator=gen).double(), torch.randn(3, 8, 8, generator=gen).double()
    out = expand(S, T)
    tile = out[8:16, 24:32]  # tile (1, 3)
    torch.testing.assert_close(tile, (S[:, 1, 3, None, None] * T).sum(0), rtol=0, atol=1e-14)


def test_expand_rejects_mismatched_template_count():
    with pytest.raises(ValueError, match="templates"):
        expand(torch.zeros(3, 2, 2), torch.zeros(4, 8, 8))
    with pytest.raises(ValueError, match="templates"):
        expand_vec(torch.zeros(3, 2), torch.zeros(4, 8))


def test_project_recovers_scalers_when_templates_are_independent(device):
    gen = torch.Generator().manual_seed(2)
    S, T = torch.randn(4, 5, 6, 3, generator=gen).double(), torch.randn(5, 8, 8, generator=gen).double()
    S, T = S.to(device), T.to(device)
    torch.testing.assert_close(project(expand(S, T), T), S, rtol=0, atol=1e-10)
    s, t = torch.randn(4, 5, 6, generator=gen).double(), torch.randn(5, 8, generator=gen).double()
    s, t = s.to(device), t.to(device)
    torch.testing.assert_close(project_vec(expand_vec(s, t), t), s, rtol=0, atol=1e-10)


def test_project_residual_is_orthogonal_to_every_template_in_every_tile():
    gen = torch.Generator().manual_seed(3)
    T, dense = torch.randn(3, 8, 8, generator=gen).double(), torch.randn(24, 16, generator=gen).double()
    residual = dense - expand(project(dense, T), T)  # (24, 16)
    tiles = residual.reshape(3, 8, 2, 8).transpose(1, 2)  # (3, 2, 8, 8)
    inner = torch.einsum("abuv,tuv->tab", tiles, T)
    assert inner.abs().max() < 1e-10
    assert residual.abs().max() > 0.1  # 3 templates cannot span a random 8x8 tile: the test is not vacuous
