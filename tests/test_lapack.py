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
