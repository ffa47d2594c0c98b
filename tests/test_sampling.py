"""Class-proportional subsets shared by the data split and a variant's labelled-image budget."""

import numpy as np
import pytest

from cnnpipe.core.sampling import labelled_subset

LABELS = np.repeat([0, 1, 2], [50, 30, 20])


@pytest.mark.parametrize("count, expected", [(50, [25, 15, 10]), (10, [5, 3, 2])])
def test_labelled_subset_keeps_class_proportions(count, expected):
    picked = labelled_subset(LABELS, count, seed=0)
    assert np.bincount(LABELS[picked]).tolist() == expected
    assert len(set(picked.tolist())) == len(picked)


@pytest.mark.parametrize("count", [0, 100, 1000])
def test_labelled_subset_of_zero_or_too_many_is_everything(count):
    np.testing.assert_array_equal(labelled_subset(LABELS, count, seed=0), np.arange(100))


def test_labelled_subset_is_seeded():
    a, b = labelled_subset(LABELS, 40, seed=7), labelled_subset(LABELS, 40, seed=7)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, labelled_subset(LABELS, 40, seed=8))
