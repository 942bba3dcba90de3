"""The one scorer: P@k / nDCG@k on hand-computed cases, validation, and the evaluation subset."""
import math

import numpy as np
import pytest
import scipy.sparse as sp

from slidebench.metrics import eval_subset, evaluate, ndcg_at_k, precision_at_k


def labels(rows, n_labels=10):
    r, c = [], []
    for i, ls in enumerate(rows):
        r += [i] * len(ls)
        c += ls
    return sp.csr_matrix((np.ones(len(c), np.float32), (r, c)), shape=(len(rows), n_labels))


def test_hand_computed_precision_and_ndcg():
    Y = labels([[0, 1], [5], [2, 3, 4, 6, 7, 8]])
    topk = np.array([[1, 9, 0, 8, 7],      # hits at ranks 1 and 3
                     [9, 8, 7, 6, 5],      # hit at rank 5
                     [2, 3, 4, 6, 7]])     # all five hit
    r = evaluate(topk, Y)
    assert r["n"] == 3
    assert r["p_at_1"] == pytest.approx((1 + 0 + 1) / 3)
    assert r["p_at_3"] == pytest.approx((2 / 3 + 0 + 1) / 3)
    assert r["p_at_5"] == pytest.approx((2 / 5 + 1 / 5 + 1) / 3)
    d = lambda r: 1 / math.log2(r + 1)  # noqa: E731
    nd1 = (1 + 0 + 1) / 3
    # point 0: DCG@3 = d(1) + d(3), IDCG@min(3,2) = d(1) + d(2)
    nd3 = ((d(1) + d(3)) / (d(1) + d(2)) + 0 + 1) / 3
    nd5 = ((d(1) + d(3)) / (d(1) + d(2)) + d(5) / d(1) + 1) / 3
    assert r["ndcg_at_1"] == pytest.approx(nd1)
    assert r["ndcg_at_3"] == pytest.approx(nd3)
    assert r["ndcg_at_5"] == pytest.approx(nd5)
    assert precision_at_k(topk, Y, 3) == pytest.approx(r["p_at_3"])
    assert ndcg_at_k(topk, Y, 5) == pytest.approx(nd5)


def test_points_without_labels_count_as_zero_by_default():
    Y = labels([[3], []])
    topk = np.array([[3, 0, 1, 2, 4], [3, 0, 1, 2, 4]])
    r = evaluate(topk, Y)
    assert r["n"] == 2 and r["p_at_1"] == pytest.approx(0.5) and r["ndcg_at_5"] == pytest.approx(0.5)
    s = evaluate(topk, Y, empty="skip")
    assert s["n"] == 1 and s["p_at_1"] == pytest.approx(1.0)


def test_unsorted_label_csr_and_extra_columns():
    Y = sp.csr_matrix((np.ones(3, np.float32), np.array([7, 2, 5]), np.array([0, 3])), shape=(1, 10))
    topk = np.array([[5, 1, 2, 0, 3, 4, 6]])
    assert evaluate(topk, Y)["p_at_3"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("topk, msg", [
    (np.array([[1, 1, 2, 3, 4]]), "repeats"),
    (np.array([[1, 2, 3, 4, 10]]), "outside"),
    (np.array([[-1, 2, 3, 4, 5]]), "outside"),
    (np.array([[1, 2, 3, 4]]), "fewer than k=5"),
    (np.array([1, 2, 3, 4, 5]), "2-D"),
    (np.array([[1.0, 2, 3, 4, 5]]), "integer"),
])
def test_bad_predictions_are_value_errors(topk, msg):
    with pytest.raises(ValueError, match=msg):
        evaluate(topk, labels([[1]]))


def test_row_count_mismatch():
    with pytest.raises(ValueError, match="rows"):
        evaluate(np.zeros((2, 5), dtype=np.int32) + np.arange(5), labels([[1]]))


def test_eval_subset_is_seeded_shuffle_not_prefix():
    a = eval_subset(1000, 100, 0)
    assert a.dtype == np.int64 and len(a) == 100 and len(np.unique(a)) == 100
    assert np.array_equal(a, eval_subset(1000, 100, 0))
    assert not np.array_equal(np.sort(a), np.arange(100))
    assert not np.array_equal(a, eval_subset(1000, 100, 1))
    assert np.array_equal(eval_subset(1000, 300, 0)[:100], a)        # subsets nest
    full = eval_subset(50, 80, 3)
    assert sorted(full.tolist()) == list(range(50))
    for bad in [(0, 5, 0), (10, 0, 0), (10, 5, -1), (10, 2.5, 0)]:
        with pytest.raises(ValueError):
            eval_subset(*bad)
