"""Condition requests for the mask generator and the inverse-frequency sampler."""

from __future__ import annotations

import numpy as np
import pytest

from shared.conditioning.features import MinMaxNormaliser, inverse_frequency_sampler, inverse_frequency_weights
from shared.conditioning.requests import resolve_conditions
from shared.io import InputError

NORMALISER = MinMaxNormaliser(minimum=0.01, maximum=0.05)


def test_list_range_uniform_and_histogram_requests():
    assert resolve_conditions([0.2, 0.8], 5, NORMALISER).tolist() == [0.2, 0.8]
    assert resolve_conditions({"range": [0.0, 1.0]}, 5, NORMALISER).tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    uniform = resolve_conditions({"uniform": [0.2, 0.4]}, 200, NORMALISER, seed=3)
    assert uniform.shape == (200,) and uniform.min() >= 0.2 and uniform.max() <= 0.4
    assert np.array_equal(uniform, resolve_conditions({"uniform": [0.2, 0.4]}, 200, NORMALISER, seed=3))
    hist = resolve_conditions({"histogram": {"edges": [0.0, 0.5, 1.0], "weights": [1, 3]}}, 4000, NORMALISER)
    assert 0.7 < np.mean(hist >= 0.5) < 0.8


def test_volumes_in_ml_go_through_the_reference_icv_and_the_saved_normaliser():
    c = resolve_conditions({"volumes_ml": [14.5, 72.5], "icv_ml": 1450}, 2, NORMALISER)
    np.testing.assert_allclose(c, [0.0, 1.0])


@pytest.mark.parametrize(
    "request_, message",
    [
        ([0.5, "big"], "conditions: c values must be numbers, got 'big'"),
        ("0.5", "conditions: c values must be a list of numbers"),
        ([], "conditions: the list of c values is empty"),
        ({"range": [1.0, 0.0]}, "range must be [low, high] with low <= high"),
        ({"volumes_ml": [20]}, "volumes_ml needs a reference icv_ml > 0"),
        ({"gaussian": [0, 1]}, "conditions: expected one of range, uniform, histogram, volumes_ml"),
        ({"histogram": {"edges": [0, 1], "weights": [1, 2]}}, "histogram needs increasing edges"),
    ],
)
def test_bad_requests_are_refused_clearly(request_, message):
    with pytest.raises(InputError) as error:
        resolve_conditions(request_, 2, NORMALISER)
    assert message in str(error.value)


def test_num_samples_must_be_positive():
    with pytest.raises(InputError, match="num_samples: expected an integer >= 1"):
        resolve_conditions({"range": [0, 1]}, 0, NORMALISER)


def test_inverse_frequency_weights_balance_the_bins():
    c = [0.05, 0.06, 0.07, 0.55]
    weights = inverse_frequency_weights(c)
    np.testing.assert_allclose(weights, [1 / 3, 1 / 3, 1 / 3, 1.0])
    assert sum(weights[:3]) == pytest.approx(weights[3])
    assert len(list(inverse_frequency_sampler(c))) == 4
