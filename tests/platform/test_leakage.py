"""The pipeline must be honest on noise and must find a planted signal; the seeds' protocol must visibly leak."""

from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import accuracy_score, roc_auc_score

from stocktrend.platform.evaluation.audit import seeds_protocol
from stocktrend.platform.data.dataset import DataConfig, build_dataset
from stocktrend.platform.data.synthetic import planted_signal_universe, random_walk_universe


def gbm_scores(x_tr, y_tr, x_te, y_te):
    model = HistGradientBoostingClassifier(max_iter=150, random_state=0)
    model.fit(x_tr.reshape(len(x_tr), -1), y_tr)
    p = model.predict_proba(x_te.reshape(len(x_te), -1))[:, 1]
    return roc_auc_score(y_te, p), accuracy_score(y_te, p >= 0.5)


def honest_split(data):
    tr, te = data.samples["train"], data.samples["test"]
    return data.windows(tr), data.targets(tr), data.windows(te), data.targets(te)


def test_random_walk_is_unpredictable_honestly_but_not_under_the_seeds_protocol():
    # 4 tickers x 3000 days: ~1,080 test windows, so the AUC's standard error (~0.017) is well inside 0.05.
    data = build_dataset(DataConfig(tickers=(), top_k=20), universe=random_walk_universe(3000, n_tickers=4, seed=4),
                         use_cache=False)
    honest_auc, _ = gbm_scores(*honest_split(data))
    assert abs(honest_auc - 0.5) < 0.05, honest_auc
    leaky = seeds_protocol(data)
    leaky_auc, leaky_acc = gbm_scores(*leaky["train"], *leaky["test"])
    assert leaky_auc > 0.70, leaky_auc  # measured ~0.9: near-duplicate windows on both sides of a random split
    assert leaky_auc - honest_auc > 0.15


def test_planted_signal_is_found():
    data = build_dataset(DataConfig(tickers=(), top_k=20), universe=planted_signal_universe(2500, seed=1),
                         use_cache=False)
    assert "mkt_ret_5" in data.transforms.selected[:5]
    auc, acc = gbm_scores(*honest_split(data))
    majority = max(data.class_counts("test").values()) / len(data.samples["test"])
    assert acc > 0.85 and acc > majority + 0.25, (acc, majority)
    assert auc > 0.9
