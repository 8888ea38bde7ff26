"""The committed sampler fixture (tests/fixtures/sampler_reference.json, compared with the Rust sampler by
tests/sampler_reference.rs) is what the numpy reference writes, and the reference itself behaves as its
formulas promise on a field whose exact flow is known."""

from __future__ import annotations

import json

import numpy as np
import pytest
import sampler_reference as ref

TOL = 1e-12


def _close(a, b, path: str) -> None:
    """Same structure, floats within TOL (numpy's transcendental functions may differ in the last bit
    between machines)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert abs(a - b) < TOL, f"{path}: {a} vs {b}"
    else:
        assert a == b, path


def test_committed_fixture_is_current() -> None:
    committed = json.loads(ref.FIXTURE.read_text())
    _close(json.loads(json.dumps(ref.fixture())), committed, "fixture")


def test_evaluation_counts() -> None:
    for solver, order in ref.SOLVERS:
        for steps in (1, 4, 9):
            evals, _ = ref.integrate(solver, order, steps, 2.0, None)
            assert len(evals) == (2 * steps - 1 if solver == "heun" else steps), (solver, steps)


def test_shifted_sigmas_are_the_hand_computed_ones() -> None:
    # K = 4, shift 3: sigma = 1, 3/4, 1/2, 1/4, 0 -> 3 s / (1 + 2 s) = 1, 0.9, 0.75, 0.5, 0.
    assert np.allclose(ref.flow_sigmas(4, 3.0), [1.0, 0.9, 0.75, 0.5, 0.0], atol=1e-15)


@pytest.mark.parametrize("solver", ref.SOLVERS, ids=lambda s: f"{s[0]}{s[1] or ''}")
def test_reference_converges_on_a_gaussian_flow(solver, monkeypatch) -> None:
    """Gaussian data N(mu, s^2) per entry: the exact flow is x_t = t mu + s_t x_0, s_t^2 = (1-t)^2 + t^2 s^2,
    linear in x; the global error must shrink with the solver's order (UniPC-1: 2, its corrector adds
    one; UniPC-2: 2, bounded by the grid's ends at sigma = 1 and 0)."""
    mu = np.array([0.7, -1.2, 0.0, 0.4, 2.0])
    s = np.array([0.3, 0.5, 2.0, 0.6, 1.0])

    def velocity(x, t):
        var = (1 - t) ** 2 + t * t * s * s
        return mu + (t * s * s - (1 - t)) / var * (x - t * mu)

    monkeypatch.setattr(ref, "velocity", velocity)
    x0 = np.array([0.9, -0.4, 1.5, -1.3, 0.6])
    errors = []
    for steps in (32, 64, 128):
        _, end = ref.integrate(*solver, steps, 1.0, None, x0)
        errors.append(np.abs(end - (mu + s * x0)).max())
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    expected = 1.0 if solver[0] == "euler" else 2.0
    assert np.all(np.abs(orders - expected) < 0.15), (errors, orders)
