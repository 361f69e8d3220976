"""Ranking metrics with trec_eval's definitions (linear gains, gain > 0 is relevant)."""
import math


def ndcg(ranking, judged, k=10):
    """nDCG@k: DCG with a log2(rank + 1) discount over the ideal ordering of all judged docs."""
    dcg = sum(judged.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranking[:k]))
    ideal = sorted((g for g in judged.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def average_precision(ranking, judged):
    """Sum of the precision at each relevant doc retrieved, over the number of relevant docs."""
    n_rel = sum(1 for g in judged.values() if g > 0)
    if n_rel == 0:
        return 0.0
    hits, total = 0, 0.0
    for i, d in enumerate(ranking):
        if judged.get(d, 0) > 0:
            hits += 1
            total += hits / (i + 1)
    return total / n_rel


def recall(ranking, judged, k):
    n_rel = sum(1 for g in judged.values() if g > 0)
    if n_rel == 0:
        return 0.0
    return sum(1 for d in ranking[:k] if judged.get(d, 0) > 0) / n_rel


def _self_test():
    judged = {"a": 3, "b": 0, "c": 1, "d": 2}
    run = ["b", "a", "x", "c"]
    assert abs(average_precision(run, judged) - (1 / 2 + 2 / 4) / 3) < 1e-12
    dcg = 3 / math.log2(3) + 1 / math.log2(5)
    idcg = 3 + 2 / math.log2(3) + 1 / math.log2(4)
    assert abs(ndcg(run, judged) - dcg / idcg) < 1e-12
    assert recall(run, judged, 2) == 1 / 3 and recall(run, judged, 100) == 2 / 3
    assert ndcg(["a"], {"a": 0}) == 0.0 and average_precision(["a"], {}) == 0.0


if __name__ == "__main__":
    _self_test()
    print("metrics self-test passed")
