"""Policy math against hand-derived values."""

import math

import pytest
import torch

from alignlab.train.components import (DPO_LOSSES, AdaptiveKLController, FixedKLController, best_of_n_kl,
                                       clipped_policy_loss, clipped_value_loss, gae, kl_k1, kl_k3, kto_loss,
                                       make_dpo_robust, sequence_logprob, sft_term, whiten)


def sig(x):
    return 1 / (1 + math.exp(-x))


def test_sequence_logprob_sums_masked_tokens():
    lp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, -9.0]])
    m = torch.tensor([[0, 1, 1], [1, 1, 0]])
    assert sequence_logprob(lp, m).tolist() == [-5.0, -1.0]


def test_k1_and_k3_estimate_the_kl_of_known_distributions():
    p = torch.tensor([0.5, 0.3, 0.2])
    q = torch.tensor([0.2, 0.3, 0.5])
    exact = float((p * (p / q).log()).sum())
    samples = torch.multinomial(p, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    logp, logq = p.log()[samples], q.log()[samples]
    assert float(kl_k1(logp, logq).mean()) == pytest.approx(exact, abs=0.01)
    assert float(kl_k3(logp, logq).mean()) == pytest.approx(exact, abs=0.01)
    assert (kl_k3(logp, logq) >= 0).all()
    # by hand for one token: r = q/p = 0.4 -> k3 = (0.4 - 1) - log 0.4
    assert float(kl_k3(torch.tensor(math.log(0.5)), torch.tensor(math.log(0.2)))) == pytest.approx(-0.6 - math.log(0.4))


def test_whiten_with_and_without_shifting_the_mean():
    v = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    m = torch.tensor([[1, 1, 1, 0]])
    w = whiten(v, m)
    assert w[0, :3].tolist() == pytest.approx([-math.sqrt(1.5), 0.0, math.sqrt(1.5)], abs=1e-4)
    assert float(w[0, 3]) == 0.0
    kept = whiten(v, m, shift_mean=False)
    assert kept[0, :3].tolist() == pytest.approx([2 - math.sqrt(1.5), 2.0, 2 + math.sqrt(1.5)], abs=1e-4)


def test_gae_matches_a_plain_loop():
    torch.manual_seed(0)
    r, v = torch.randn(3, 6), torch.randn(3, 6)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [0, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    adv, ret = gae(r, v, mask, gamma=0.9, lam=0.8)
    for b in range(3):
        idx = [t for t in range(6) if mask[b, t]]
        expected = {}
        running = 0.0
        for j in reversed(range(len(idx))):
            t = idx[j]
            nv = float(v[b, idx[j + 1]]) if j + 1 < len(idx) else 0.0
            delta = float(r[b, t]) + 0.9 * nv - float(v[b, t])
            running = delta + 0.9 * 0.8 * running
            expected[t] = running
        for t in range(6):
            want = expected.get(t, 0.0)
            assert float(adv[b, t]) == pytest.approx(want, abs=1e-5)
            assert float(ret[b, t]) == pytest.approx(want + float(v[b, t]) if t in expected else 0.0, abs=1e-5)


def test_clipped_policy_loss_by_hand():
    logp = torch.tensor([[math.log(1.5), math.log(0.5)]])
    old = torch.zeros(1, 2)
    adv = torch.tensor([[1.0, -1.0]])
    loss, stats = clipped_policy_loss(logp, old, adv, torch.ones(1, 2), clip=0.2)
    # token 1: ratio 1.5, A=1: max(-1.5, -1.2) = -1.2 (clipped); token 2: ratio .5, A=-1: max(.5, .8) = .8 (clipped)
    assert float(loss) == pytest.approx((-1.2 + 0.8) / 2)
    assert float(stats["clipfrac"]) == 1.0


def test_clipped_value_loss_by_hand():
    v, old, ret = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    loss, frac = clipped_value_loss(v, old, ret, torch.ones(1, 2), clip=0.2)
    # token 1: (1-0)^2=1 vs (0.2-0)^2=.04 -> 1; token 2: (0-1)^2=1 vs same -> 1
    assert float(loss) == pytest.approx(0.5)


def test_adaptive_kl_controller_moves_toward_the_target():
    c = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    c.update(current_kl=12.0, n_steps=1000)  # error clipped to +0.2
    assert c.value == pytest.approx(0.1 * (1 + 0.2 * 0.1))
    c.update(current_kl=5.4, n_steps=1000)  # error -0.1
    assert c.value == pytest.approx(0.1 * 1.02 * (1 - 0.01))
    assert FixedKLController(0.05).update(100.0, 10) == 0.05
    with pytest.raises(ValueError):
        AdaptiveKLController(0.1, target=0, horizon=1)


def test_dpo_family_on_hand_made_numbers():
    pc, pr, rc, rr = torch.tensor([-10.0]), torch.tensor([-12.0]), torch.tensor([-11.0]), torch.tensor([-11.5])
    nc, nr = torch.tensor([4.0]), torch.tensor([5.0])
    delta = (-10 + 11) - (-12 + 11.5)  # 1.5
    beta = 0.5
    assert float(DPO_LOSSES["sigmoid"](pc, pr, rc, rr, beta, nc, nr)) == pytest.approx(-math.log(sig(0.75)), rel=1e-5)
    assert float(DPO_LOSSES["hinge"](pc, pr, rc, rr, beta, nc, nr)) == pytest.approx(1 - 0.75)
    ipo = (1 / 4 - (-0.5) / 5 - 1 / (2 * beta)) ** 2
    assert float(DPO_LOSSES["ipo"](pc, pr, rc, rr, beta, nc, nr)) == pytest.approx(ipo, rel=1e-5)
    robust = make_dpo_robust(0.2)(pc, pr, rc, rr, beta, nc, nr)
    expected = (-(0.8) * math.log(sig(0.75)) + 0.2 * math.log(sig(-0.75))) / 0.6
    assert float(robust) == pytest.approx(expected, rel=1e-5)
    assert delta == 1.5


def test_kto_and_sft_term():
    policy, ref = torch.tensor([-5.0, -5.0]), torch.tensor([-6.0, -6.0])
    got = kto_loss(policy, ref, torch.tensor([1, 0]), reference_point=0.4, beta=0.1, desirable_weight=1.0,
                   undesirable_weight=2.0)
    assert got.tolist() == pytest.approx([1 - sig(0.1 * (1 - 0.4)), 2 * (1 - sig(0.1 * (0.4 - 1)))], rel=1e-5)
    # a negative KL estimate is clamped to zero
    assert kto_loss(policy, ref, torch.tensor([1, 1]), -3.0, 0.1).tolist() == pytest.approx([1 - sig(0.1)] * 2, rel=1e-5)
    assert sft_term(torch.tensor([-8.0]), torch.tensor([4])).tolist() == [2.0]


def test_best_of_n_kl_formula():
    assert best_of_n_kl(1) == 0.0
    assert best_of_n_kl(2) == pytest.approx(math.log(2) - 0.5)
    assert best_of_n_kl(16) == pytest.approx(math.log(16) - 15 / 16)
    with pytest.raises(ValueError):
        best_of_n_kl(0)
