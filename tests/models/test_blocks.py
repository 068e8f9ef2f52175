"""Tests of the shared building blocks (sarkit/models/blocks.py): anti-aliased sampling, generators, PatchGAN."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sarkit.models.blocks import BlurDown, BlurUp, PatchGAN, ResnetGenerator, binomial_kernel


def test_binomial_kernels_are_the_normalised_pascal_rows():
    assert torch.allclose(binomial_kernel(3), torch.outer(torch.tensor([1., 2, 1]), torch.tensor([1., 2, 1])) / 16)
    assert torch.allclose(binomial_kernel(4), torch.outer(torch.tensor([1., 3, 3, 1]), torch.tensor([1., 3, 3, 1])) / 64)


@pytest.mark.parametrize("size", [8, 9, 32])
def test_blur_down_halves_with_a_binomial_average_and_keeps_constants(size):
    x = torch.rand(2, 3, size, size)
    y = BlurDown(3)(x)
    assert y.shape == (2, 3, (size + 1) // 2, (size + 1) // 2)
    # y[i, j] = Σ_ab k[a, b]·pad(x)[2i + a, 2j + b], written out for one interior pixel
    xp = F.pad(x, (1, 1, 1, 1), mode="reflect")
    k = binomial_kernel(3)
    assert torch.allclose(y[1, 2, 2, 3], (k * xp[1, 2, 4:7, 6:9]).sum(), atol=1e-6)
    assert torch.allclose(BlurDown(3)(torch.full((1, 3, size, size), 0.7)), torch.full_like(y[:1], 0.7))


def test_blur_up_doubles_keeps_constants_and_spreads_an_impulse_as_the_kernel():
    x = torch.full((1, 2, 5, 7), -0.4)
    y = BlurUp(2)(x)
    assert y.shape == (1, 2, 10, 14) and torch.allclose(y, torch.full_like(y, -0.4), atol=1e-6)
    imp = torch.zeros(1, 1, 8, 8)
    imp[0, 0, 4, 4] = 1.0
    out = BlurUp(1)(imp)[0, 0]
    # zero insertion puts the impulse at (8, 8) of the 16² grid; the gain-4 4×4 binomial spreads it over 7..10
    assert torch.allclose(out[7:11, 7:11], binomial_kernel(4) * 4, atol=1e-6)
    assert torch.isclose(out.sum(), torch.tensor(4.0)) and out[:7].abs().sum() == 0


def test_antialiased_generator_and_discriminator_keep_the_plain_ones_shapes():
    x = torch.rand(1, 2, 64, 64) * 2 - 1
    for aa in (False, True):
        g = ResnetGenerator(2, 3, 8, 2, antialias=aa, antialias_up=aa)
        assert g(x).shape == (1, 3, 64, 64)
    assert PatchGAN(3, 8, 3, "instance", antialias=True)(torch.rand(1, 3, 64, 64)).shape == \
        PatchGAN(3, 8, 3, "instance")(torch.rand(1, 3, 64, 64)).shape
    blur_layers = [m for m in ResnetGenerator(2, 3, 8, 2, antialias=True, antialias_up=True).modules()
                   if isinstance(m, (BlurDown, BlurUp))]
    assert [type(m).__name__ for m in blur_layers] == ["BlurDown", "BlurDown", "BlurUp", "BlurUp"]
    assert not any(isinstance(m, torch.nn.ConvTranspose2d)
                   for m in ResnetGenerator(2, 3, 8, 2, antialias_up=True).modules())
    assert "kernel" not in ResnetGenerator(2, 3, 8, 2, antialias=True).state_dict()  # fixed, not a weight


def test_fused_adam_updates_as_the_per_op_adam():
    """``adam`` picks the fused kernel on the CPU; given the same gradients, five of its steps move the parameters
    as five steps of torch's per-op Adam do, to float rounding (1e-7; the steps move them by up to 1e-3)."""
    from sarkit.models.blocks import adam

    torch.manual_seed(0)
    net = PatchGAN(3, 8, 2, "batch")
    grads = [[torch.randn_like(p) * 10 ** torch.randint(-6, 1, ()).item() for p in net.parameters()]
             for _ in range(5)]
    a = [p.detach().clone().requires_grad_() for p in net.parameters()]
    b = [p.detach().clone().requires_grad_() for p in net.parameters()]
    fused = adam(a, 2e-4, (0.5, 0.999))
    plain = torch.optim.Adam(b, lr=2e-4, betas=(0.5, 0.999), foreach=False)
    assert fused.param_groups[0]["fused"] and not plain.param_groups[0]["fused"]
    for step in grads:
        for p, q, g in zip(a, b, step):
            p.grad, q.grad = g.clone(), g.clone()
        fused.step()
        plain.step()
    moved = max(float((p - q0).detach().abs().max()) for p, q0 in zip(a, net.parameters()))
    assert moved > 5e-4
    assert max(float((p - q).detach().abs().max()) for p, q in zip(a, b)) < 1e-7


@pytest.mark.parametrize("blur", [BlurDown, BlurUp])
def test_blurs_under_bf16_autocast_run_in_float32_and_return_bf16(blur):
    """On the CPU a bf16 input is blurred in float32 (faster there) and comes back as bf16: the float32 blur of
    the same values rounded to bf16, and its gradient reaches the input."""
    torch.manual_seed(0)
    x = (torch.rand(1, 4, 8, 8) * 2 - 1).to(torch.bfloat16).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = blur(4)(x)
    assert y.dtype == torch.bfloat16
    assert torch.equal(y, blur(4)(x.detach().float()).to(torch.bfloat16))
    y.float().sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.bfloat16 and bool(x.grad.abs().sum() > 0)


# --------------------------------------------------------------------------------------------- upsample lever
def _nyquist_rows(y: torch.Tensor, lo: int, hi: int) -> float:
    """|mean_r (−1)^r·(p[r] − mean p)| / mean|y| of the row profile p (mean over batch, channels, columns) on
    rows lo..hi: the period-2 (checkerboard) amplitude of the output relative to its size."""
    p = y.mean(dim=(0, 1, 3))[lo:hi]
    sign = torch.tensor([(-1.0) ** i for i in range(len(p))])
    return float(((p - p.mean()) * sign).mean().abs() / y.abs().mean().clamp_min(1e-12))


def test_upsample_option_swaps_transposed_convolutions_for_bilinear_resize_convolutions():
    from sarkit.models.blocks import UnetGenerator, build_resnet, build_unet

    def kinds(net):
        return (sum(isinstance(m, torch.nn.ConvTranspose2d) for m in net.modules()),
                sum(isinstance(m, torch.nn.Upsample) for m in net.modules()))

    assert kinds(UnetGenerator(1, 3, 5, 8)) == (5, 0)                   # the paper's decoder: 5 transposed convs
    unet = build_unet(1, 3, 5, 8, upsample="resize")
    assert kinds(unet) == (0, 5)
    assert all(m.mode == "bilinear" and m.scale_factor == 2 for m in unet.modules()
               if isinstance(m, torch.nn.Upsample))
    assert kinds(build_resnet(2, 3, 8, 2)) == (2, 0)
    assert kinds(build_resnet(2, 3, 8, 2, upsample="resize")) == (0, 2)
    assert build_resnet(2, 3, 8, 2, antialias_up=True).upsample == "blur"   # older CUT exports rebuild as before
    x = torch.rand(1, 1, 64, 64) * 2 - 1
    assert unet.eval()(x).shape == (1, 3, 64, 64)
    assert build_resnet(1, 3, 8, 2, upsample="resize")(x).shape == (1, 3, 64, 64)
    with pytest.raises(ValueError, match="upsample must be one of"):
        build_unet(1, 3, 5, 8, upsample="blur")                        # the U-Net offers transpose | resize


@pytest.mark.parametrize("arch", ["unet", "resnet"])
def test_a_constant_input_gives_a_checkerboard_with_transposed_convolutions_and_none_with_resize(arch):
    # The ideal output of a spatially constant input is constant away from the borders. A stride-2 transposed
    # convolution sums different kernel taps into even and odd output rows (uneven overlap, Odena et al. 2016),
    # so even an untrained decoder paints a period-2 pattern; bilinear resize + conv has no such parity.
    from sarkit.models.blocks import build_resnet, build_unet, init_weights

    x = torch.full((1, 1, 256, 256), 0.5)
    amp = {}
    for up in ("transpose", "resize"):
        torch.manual_seed(0)
        net = build_unet(1, 3, 5, 8, upsample=up) if arch == "unet" else build_resnet(1, 3, 8, 2, upsample=up)
        with torch.no_grad():
            amp[up] = _nyquist_rows(init_weights(net).eval()(x), 64, 192)
    assert amp["transpose"] > 1e-3
    assert amp["resize"] < 1e-5
