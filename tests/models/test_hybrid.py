import pytest
import torch

from stocktrend.models.hybrid import HybridConfig, HybridNet, count_parameters, preset
from stocktrend.models.module import TrendModule


def test_seed_preset_matches_the_seeds_size():
    n = count_parameters(HybridNet(preset("seed")))
    assert n == 7_702_631  # the seeds claim 7,702,786; ff_dim=1060 is the closest feed-forward width (-155)
    assert abs(n - 7_702_786) < 1_000
    worse = [abs(count_parameters(HybridNet(preset("seed", ff_dim=f))) - 7_702_786) for f in (1059, 1061)]
    assert min(worse) > abs(n - 7_702_786)


def test_small_preset_is_about_30x_smaller():
    ratio = count_parameters(HybridNet(preset("seed"))) / count_parameters(HybridNet(preset("small")))
    assert 20 < ratio < 40


@pytest.mark.parametrize("n_classes", [2, 3, 0])
def test_shapes_and_attention(n_classes):
    cfg = preset("tiny", n_features=7, n_classes=n_classes)
    model = HybridNet(cfg).eval()
    x = torch.randn(5, 12, 7)
    out, w = model(x, return_attention=True)
    assert out.shape == ((5, n_classes) if n_classes else (5,))
    assert w.shape == (5, 12)
    torch.testing.assert_close(w.sum(1), torch.ones(5))
    with pytest.raises(ValueError, match=r"expected input \(batch, days, 7\)"):
        model(torch.randn(5, 12, 8))


def test_config_round_trip_and_validation():
    cfg = preset("small", n_features=11)
    assert HybridConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="divisible by n_heads"):
        preset("tiny", n_heads=3)
    with pytest.raises(ValueError, match="unknown model config field"):
        HybridConfig.from_dict({"bogus": 1})
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")


def test_overfits_one_batch():
    torch.manual_seed(0)
    module = TrendModule(preset("tiny", n_features=6).to_dict(), label_smoothing=0.0)
    x, y = torch.randn(16, 10, 6), torch.randint(0, 2, (16,))
    opt = torch.optim.AdamW(module.parameters(), lr=1e-2)
    module.train()
    for _ in range(150):
        loss = module.loss_fn(module(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    module.eval()
    assert loss.item() < 0.05
    assert (module(x).argmax(-1) == y).all()
