"""The direct LAPACK calls of the polish give scipy.linalg's answers bit for bit."""
import numpy as np
import pytest
from scipy import linalg

from solvers._lapack import cho_solve_lower, cholesky_lower, solve_lower, solve_lower_transposed


@pytest.mark.parametrize("k, n_rhs", [(0, None), (1, None), (7, None), (30, None), (7, 3), (7, 0)])
def test_the_direct_calls_match_scipy_linalg_bit_for_bit(k, n_rhs):
    rng = np.random.default_rng(k)
    A = rng.standard_normal((k, k))
    G = A @ A.T + k * np.eye(k)
    b = rng.standard_normal(k if n_rhs is None else (k, n_rhs))
    L = np.ascontiguousarray(cholesky_lower(G))
    assert np.array_equal(L, linalg.cholesky(G, lower=True))
    assert np.array_equal(cho_solve_lower(L, b), linalg.cho_solve((L, True), b))
    assert np.array_equal(solve_lower(L, b), linalg.solve_triangular(L, b, lower=True))
    assert np.array_equal(solve_lower_transposed(L, b), linalg.solve_triangular(L.T, b, lower=False))
    assert all(answer.shape == b.shape for answer in (cho_solve_lower(L, b), solve_lower(L, b)))
    assert np.allclose(L @ solve_lower(L, b), b) and np.allclose(L.T @ solve_lower_transposed(L, b), b)


def test_a_matrix_that_is_not_positive_definite_is_refused():
    with pytest.raises(linalg.LinAlgError, match="not positive definite"):
        cholesky_lower(np.array([[1.0, 2.0], [2.0, 1.0]]))


@pytest.mark.parametrize("size, depth", [(0, 5), (1, 4), (9, 0), (9, 40), (33, 17)])
def test_the_products_for_kernels_match_numpy(size, depth):
    """``gram_into`` is ``B @ B.T`` (exactly symmetric, written into a wider matrix's
    leading block), ``product_into`` is ``B @ x``; with no rows both are zero; a block that
    is not C-contiguous is refused (BLAS would read it with the wrong row length)."""
    from solvers._lapack import gram_into, product_into

    rng = np.random.default_rng(size + depth)
    block, vector = rng.standard_normal((size, depth)), rng.standard_normal(depth)
    gram, out = np.full((size + 2, size + 2), 7.0), np.full(size + 1, 7.0)
    gram_into(block, gram)
    product_into(block, vector, out)
    np.testing.assert_allclose(gram[:size, :size], block @ block.T, rtol=1e-13, atol=1e-13)
    assert np.array_equal(gram[:size, :size], gram[:size, :size].T)
    assert (gram[size:] == 7.0).all() and (gram[:, size:] == 7.0).all()  # outside the block: untouched
    np.testing.assert_allclose(out[:size], block @ vector, rtol=1e-13, atol=1e-13)
    assert out[size] == 7.0
    if size > 1 and depth > 1:
        with pytest.raises(ValueError, match="C-contiguous"):
            gram_into(np.asfortranarray(block), gram)
        with pytest.raises(ValueError, match="contiguous"):
            product_into(block[:, ::2], vector[::2], out)
