"""Tests of the shared diffusion samplers (sarkit/models/samplers.py): schedule, respacing, DDPM/DDIM steps,
position-keyed noise and first-block caching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sarkit.errors import InputError
from sarkit.models.diffusion_unet import DiffusionUNet
from sarkit.models.samplers import (FirstBlockCache, NoiseSchedule, PositionalNoise, SamplingPlan, sample,
                                    spaced_timesteps)

CPU = torch.device("cpu")


def tiny_unet(seed: int = 0) -> DiffusionUNet:
    """An 8-channel 3-level U-Net with every parameter random (the zero-initialised output layers too)."""
    torch.manual_seed(seed)
    net = DiffusionUNet(2, 2, channels=8, res_blocks=1, channel_mult=(1, 2, 2), attn_levels=(1, 2), heads=2).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return net


def test_linear_schedule_is_the_guided_diffusion_scaling():
    s = NoiseSchedule.linear(2000)
    assert s.timesteps == 2000
    assert s.betas[0] == pytest.approx(5e-5) and s.betas[-1] == pytest.approx(0.01)
    assert np.all(np.diff(s.alphas_cumprod) < 0) and s.alphas_cumprod[-1] < 1e-4
    x0, eps = torch.ones(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)
    xt = s.q_sample(x0, torch.tensor([0, 1999]), eps)
    assert xt[0].mean().item() == pytest.approx(float(np.sqrt(s.alphas_cumprod[0])), rel=1e-6)
    assert xt[1].mean().item() == pytest.approx(float(np.sqrt(s.alphas_cumprod[1999])), rel=1e-5)


def test_respacing_spans_the_whole_process():
    ts = spaced_timesteps(2000, 250)
    assert len(ts) == 250 and ts[0] == 0 and ts[-1] == 1999 and list(ts) == sorted(set(ts))
    plan = SamplingPlan.make(NoiseSchedule.linear(2000), "ddpm")
    assert plan.steps == 250
    assert SamplingPlan.make(NoiseSchedule.linear(2000), "ddim").steps == 50
    with pytest.raises(InputError, match="--steps"):
        spaced_timesteps(100, 101)
    with pytest.raises(InputError, match="--sampler"):
        SamplingPlan.make(NoiseSchedule.linear(100), "euler", 10)
    with pytest.raises(InputError, match="--eta"):
        SamplingPlan.make(NoiseSchedule.linear(100), "ddim", 10, eta=2.0)


@pytest.mark.parametrize("kind,eta", [("ddpm", 0.0), ("ddim", 0.0), ("ddim", 1.0)])
def test_an_oracle_noise_predictor_recovers_its_image(kind, eta):
    """With ε = the exact noise of a known x0 at every step, each sampler ends at x0 (the last step is the
    posterior mean at t = 0: coefficient 1 on x̂_0)."""
    sched = NoiseSchedule.linear(200)
    plan = SamplingPlan.make(sched, kind, 20, eta)
    x0 = torch.linspace(-0.9, 0.9, 2 * 8 * 8).reshape(1, 2, 8, 8)
    ac = torch.as_tensor(sched.alphas_cumprod, dtype=torch.float32)

    def oracle(x, t, k, n):
        a = ac[t].view(-1, 1, 1, 1)
        return (x - a.sqrt() * x0) / (1 - a).sqrt()

    noise = PositionalNoise([3], [(0, 0)], 2, 8, 8, CPU)
    out = sample(oracle, plan, noise)
    torch.testing.assert_close(out, x0, atol=1e-4, rtol=0)


def test_positional_noise_depends_on_scene_pixel_seed_and_draw_only():
    a = PositionalNoise([7, 7], [(0, 0), (5, 11)], 3, 16, 16, CPU)
    z = a(4)
    assert z.shape == (2, 3, 16, 16)
    torch.testing.assert_close(z[0, :, 5:, 11:], z[1, :, :11, :5], atol=0, rtol=0)   # the shared pixels
    other = PositionalNoise([7], [(5, 11)], 3, 16, 16, CPU)                           # alone, another batch
    torch.testing.assert_close(other(4)[0], z[1], atol=0, rtol=0)
    assert not torch.equal(a(5), z)                                                   # another draw
    assert not torch.equal(PositionalNoise([8, 8], [(0, 0), (5, 11)], 3, 16, 16, CPU)(4), z)  # another seed
    assert not torch.equal(z[:, 0], z[:, 1])                                          # channels differ
    big = PositionalNoise([1], [(0, 0)], 4, 128, 128, CPU)(0)
    assert abs(big.mean().item()) < 0.01 and abs(big.std().item() - 1.0) < 0.01
    assert abs(float(np.corrcoef(big[0, 0, :, :-1].flatten(), big[0, 0, :, 1:].flatten())[0, 1])) < 0.02


def test_split_forward_is_bit_identical_and_cache_zero_is_no_cache():
    net = tiny_unet()
    plan = SamplingPlan.make(NoiseSchedule.linear(100), "ddpm", 12)
    cond = torch.randn(2, 2, 16, 16, generator=torch.Generator().manual_seed(1))
    noise = PositionalNoise([0, 0], [(0, 0), (0, 16)], 2, 16, 16, CPU)
    with torch.inference_mode():
        plain = sample(lambda x, t, k, n: net(x, t, cond), plan, noise)
        cache = FirstBlockCache(net, 0.0)
        cached = sample(lambda x, t, k, n: cache(x, t, cond, k, n), plan, noise)
    assert torch.equal(plain, cached)
    assert cache.skipped == 0 and cache.evaluated == 2 * 12


def test_cache_skips_steps_and_stays_close():
    """On a tiny model with τ = 0.3, some middle steps are skipped (never the first or last) and the sample
    stays within 0.25 (mean absolute difference, model range [-1, 1]) of the uncached one."""
    net = tiny_unet()
    plan = SamplingPlan.make(NoiseSchedule.linear(100), "ddim", 30)
    cond = torch.randn(2, 2, 16, 16, generator=torch.Generator().manual_seed(1))
    noise = PositionalNoise([0, 0], [(0, 0), (0, 16)], 2, 16, 16, CPU)
    skipped_at: list[int] = []

    class Spy(FirstBlockCache):
        def __call__(self, x, t, c, k, n):
            before = self.skipped
            out = super().__call__(x, t, c, k, n)
            if self.skipped > before:
                skipped_at.append(k)
            return out

    with torch.inference_mode():
        plain = sample(lambda x, t, k, n: net(x, t, cond), plan, noise)
        cache = Spy(net, 0.3)
        cached = sample(lambda x, t, k, n: cache(x, t, cond, k, n), plan, noise)
    assert cache.skipped >= 1 and 0 not in skipped_at and 29 not in skipped_at
    assert (cached - plain).abs().mean().item() < 0.25
    assert not torch.equal(cached, plain)


def test_cache_decides_per_tile():
    """Tiles of a batch skip different steps; each tile's skips and result are those it gets alone (up to float
    rounding of the batched convolutions)."""
    net = tiny_unet()
    plan = SamplingPlan.make(NoiseSchedule.linear(100), "ddim", 20)
    g = torch.Generator().manual_seed(2)
    cond = torch.cat([torch.zeros(1, 2, 16, 16), torch.randn(1, 2, 16, 16, generator=g) * 3])
    noise = PositionalNoise([0, 0], [(0, 0), (0, 0)], 2, 16, 16, CPU)
    with torch.inference_mode():
        both = FirstBlockCache(net, 0.15)
        out = sample(lambda x, t, k, n: both(x, t, cond, k, n), plan, noise)
        singles, skips = [], []
        for i in range(2):
            one = FirstBlockCache(net, 0.15)
            n1 = PositionalNoise([0], [(0, 0)], 2, 16, 16, CPU)
            singles.append(sample(lambda x, t, k, n: one(x, t, cond[i:i + 1], k, n), plan, n1))
            skips.append(one.skipped)
    assert skips[0] != skips[1] and both.skipped == sum(skips)
    torch.testing.assert_close(out, torch.cat(singles), atol=1e-4, rtol=0)


def test_eps_from_x0_inverts_q_sample_at_the_plans_alphas():
    from sarkit.models.samplers import eps_from_x0

    sched = NoiseSchedule.linear(100)
    plan = SamplingPlan.make(sched, "ddim", 7)
    t = torch.tensor([plan.timesteps[0], plan.timesteps[3], plan.timesteps[-1]])
    a = plan.alphas_at(t)
    assert torch.allclose(a.flatten().double(), torch.as_tensor(sched.alphas_cumprod[t.numpy()]), rtol=1e-6)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.rand(3, 2, 4, 4, generator=g) * 2 - 1, torch.randn(3, 2, 4, 4, generator=g)
    assert torch.allclose(eps_from_x0(sched.q_sample(x0, t, eps), x0, a), eps, atol=1e-4)
