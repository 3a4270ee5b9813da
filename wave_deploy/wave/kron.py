"""Kronecker expansion of weight templates (DESIGN 3.1) and its least-squares inverse.

A weight W of shape (a*u, b*v) is a grid of a x b tiles of shape (u, v); tile (i, j) is a weighted mix of the
N shared templates T[t] (u, v) with weights S[t, i, j]:

    W = sum_t kron(S[t], T[t])          S: (N, a, b)   T: (N, u, v)   W: (a*u, b*v)

Vectors are the 1-D case: segment i (length w) of a length-m vector is sum_t s[t, i] * t[t].
Every function is batched over leading dimensions, so all layers of one kind expand in a single einsum.
"""

from __future__ import annotations

import torch
from torch import Tensor


def expand(S: Tensor, T: Tensor) -> Tensor:
    """Block-form expansion. S (..., N, a, b) scalers, T (N, u, v) templates -> W (..., a*u, b*v)."""
    *lead, n, a, b = S.shape
    nt, u, v = T.shape
    if n != nt:
        raise ValueError(f"scalers hold {n} templates but {nt} templates were given")
    # W[..., i, p, j, q] = sum_t S[..., t, i, j] * T[t, p, q]; row i*u+p, column j*v+q is kron's layout.
    W = torch.einsum("...tij,tpq->...ipjq", S, T)
    return W.reshape(*lead, a * u, b * v)


def expand_vec(s: Tensor, t: Tensor) -> Tensor:
    """1-D expansion. s (..., N, m/w) scalers, t (N, w) templates -> (..., m)."""
    *lead, n, k = s.shape
    nt, w = t.shape
    if n != nt:
        raise ValueError(f"scalers hold {n} templates but {nt} templates were given")
    return torch.einsum("...ti,tp->...ip", s, t).reshape(*lead, k * w)


def project(W: Tensor, T: Tensor) -> Tensor:
    """Least-squares scalers for a dense weight: argmin_S ||expand(S, T) - W||.

    W (..., a*u, b*v), T (N, u, v) -> S (..., N, a, b). Each tile is projected onto span{T[t]} on its own;
    when the N templates are linearly independent, project(expand(S, T), T) recovers S.
    """
    *lead, rows, cols = W.shape
    n, u, v = T.shape
    if rows % u or cols % v:
        raise ValueError(f"weight {tuple(W.shape[-2:])} is not a grid of {u}x{v} tiles")
    a, b = rows // u, cols // v
    tiles = W.reshape(*lead, a, u, b, v).transpose(-3, -2).reshape(*lead, a, b, u * v)  # (..., a, b, u*v)
    pinv = torch.linalg.pinv(T.reshape(n, u * v))  # (u*v, N)
    S = tiles @ pinv  # (..., a, b, N)
    return S.movedim(-1, -3)  # (..., N, a, b)


def project_vec(x: Tensor, t: Tensor) -> Tensor:
    """Least-squares scalers for a dense vector. x (..., m), t (N, w) -> s (..., N, m/w)."""
    *lead, m = x.shape
    _n, w = t.shape
    if m % w:
        raise ValueError(f"vector of length {m} is not a sequence of length-{w} segments")
    segments = x.reshape(*lead, m // w, w)  # (..., m/w, w)
    s = segments @ torch.linalg.pinv(t)  # (..., m/w, N)
    return s.transpose(-1, -2)  # (..., N, m/w)
