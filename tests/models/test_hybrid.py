import pytest
import torch

from stocktrend.models.hybrid import HybridConfig, HybridNet, count_parameters, preset
from stocktrend.models.module import TrendModule


def test_seed_preset_matches_the_seeds_size():
    seeds = preset("seed", last_day_skip=False)  # the seeds' network itself
    n = count_parameters(HybridNet(seeds))
    assert n == 7_702_631  # the seeds claim 7,702,786; ff_dim=1060 is the closest feed-forward width (-155)
    assert abs(n - 7_702_786) < 1_000
    worse = [abs(count_parameters(HybridNet(preset("seed", ff_dim=f, last_day_skip=False))) - 7_702_786)
             for f in (1059, 1061)]
    assert min(worse) > abs(n - 7_702_786)
    # the shipped preset adds the last day's 50 inputs to the head's first layer (50 x 256 weights)
    assert count_parameters(HybridNet(preset("seed"))) == n + 50 * 256


def test_the_last_days_inputs_reach_the_head_and_old_configs_build_without_them():
    cfg = preset("tiny", n_features=6)
    assert cfg.last_day_skip
    net = HybridNet(cfg).eval()
    assert net.head[0].in_features == 2 * cfg.lstm_hidden + 6
    # the head's first layer reads the last day's inputs directly: zeroing those weights cuts the path
    x = torch.randn(4, 10, 6)
    y = x.clone()
    y[:, -1] += 3.0
    with torch.no_grad():
        net.conv[0][0].weight.zero_()  # nothing reaches the sequence path from the inputs...
        net.conv[0][0].bias.zero_()
        assert not torch.allclose(net(x), net(y))  # ...and the last day still moves the output
        net.head[0].weight[:, -6:] = 0
        assert torch.allclose(net(x), net(y))
    # a config written before the field existed has no key: the network is the one it trained (no skip); the
    # checkpoint round trip is in tests/platform/test_training.py
    old = {k: v for k, v in cfg.to_dict().items() if k != "last_day_skip"}
    assert not HybridConfig.from_dict(old).last_day_skip
    assert HybridNet(HybridConfig.from_dict(old)).head[0].in_features == 2 * cfg.lstm_hidden


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
