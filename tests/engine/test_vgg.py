"""The VGG19 feature extractor: offline weights, named layers, truncation, no parameter gradients."""

import time

import pytest
import torch
from torchvision.models import vgg19

from nst_core import device
from nst_core.transfer import gram
from nst_core.vgg import (
    STYLE_LAYERS,
    TORCHVISION_WEIGHTS_FILE,
    VGGFeatures,
    WeightsError,
    cached_features,
    load_caffe_state_dict,
)


def test_caffe_weights_are_dequantised_into_torchvision_layout():
    state = load_caffe_state_dict()
    assert state["0.weight"].shape == (64, 3, 3, 3) and state["0.weight"].dtype == torch.float32
    assert state["34.weight"].shape == (512, 512, 3, 3)  # conv5_4
    assert len(state) == 32  # 16 convolutions, weight and bias


def test_network_is_truncated_frozen_and_returns_named_layers():
    model = VGGFeatures(["relu1_1", "relu4_2"])
    assert len(model.net) == 23  # up to relu4_2, nothing deeper
    assert not any(p.requires_grad for p in model.parameters())
    x = torch.rand(1, 3, 40, 48, requires_grad=True)
    feats = model(x)
    assert set(feats) == {"relu1_1", "relu4_2"} and feats["relu4_2"].shape == (1, 512, 5, 6)
    feats["relu4_2"].sum().backward()
    assert x.grad is not None and all(p.grad is None for p in model.parameters())


def test_torchvision_weights_come_only_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsError, match="not in the torch cache"):
        VGGFeatures(["relu1_1"], weights="torchvision")
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(vgg19(weights=None).state_dict(), tmp_path / "hub" / "checkpoints" / TORCHVISION_WEIGHTS_FILE)
    model = VGGFeatures(["relu1_1"], weights="torchvision")
    assert not model.bgr  # ImageNet mean/std in RGB, not Caffe's BGR 0-255
    assert model(torch.rand(1, 3, 16, 16))["relu1_1"].shape == (1, 64, 16, 16)


def test_bfloat16_features_keep_the_statistics_the_losses_use():
    """The CPU's bfloat16 path changes speed, not what the objective sees (to within ~1 %)."""
    x = torch.rand(1, 3, 64, 80)
    exact = cached_features("cpu")(x)
    fast = cached_features("cpu", dtype=torch.bfloat16)(x)
    assert all(f.dtype == torch.bfloat16 for f in fast.values())
    for layer in STYLE_LAYERS:
        error = (gram(fast[layer]) - gram(exact[layer])).norm() / gram(exact[layer]).norm()
        assert error < 0.03, (layer, float(error))
    content_error = (fast["relu4_2"].float() - exact["relu4_2"]).norm() / exact["relu4_2"].norm()
    assert content_error < 0.05


@pytest.mark.parametrize(("flag", "expected"), [("1", torch.bfloat16), ("0", torch.float32)])
def test_cpu_precision_can_be_forced_either_way(monkeypatch, flag, expected):
    monkeypatch.setenv("NST_CPU_BF16", flag)
    device.cpu_prefers_bf16.cache_clear()
    try:
        assert device.compute_dtype("cpu") == expected
    finally:
        device.cpu_prefers_bf16.cache_clear()


def test_bf16_is_chosen_only_where_the_cpu_has_it_and_it_measures_faster():
    probes = []

    def probe(ratio):
        def run():
            probes.append(ratio)
            return ratio

        return run

    # No bfloat16 instructions: emulated, never chosen, and not worth probing.
    assert not device.prefer_bf16("flags : fpu avx2 fma", probe(3.0))
    assert probes == []
    # Advertised, but slower or barely faster in practice (AMX hidden by a hypervisor).
    assert not device.prefer_bf16("flags : avx2 avx512f avx512_bf16", probe(0.5))
    assert not device.prefer_bf16("flags : avx2 avx512f avx512_bf16", probe(1.1))
    # Advertised and clearly faster.
    assert device.prefer_bf16("flags : avx512_bf16 amx_bf16 amx_tile", probe(2.5))
    assert probes == [0.5, 1.1, 2.5]


def test_the_engine_picks_the_faster_precision_on_this_cpu(monkeypatch):
    """Checked against a whole step's network work, where the probe times one convolution."""
    # Forward and input gradient, as a step does: steadier than a forward pass alone,
    # which at small sizes sometimes measured too close to call.
    x = torch.rand(1, 3, 128, 128, requires_grad=True)
    models = {dtype: cached_features("cpu", dtype=dtype) for dtype in (torch.float32, torch.bfloat16)}
    seconds = {dtype: float("inf") for dtype in models}
    for attempt in range(4):  # interleaved, so both see the same load; the first warms up
        for dtype, model in models.items():
            started = time.perf_counter()
            sum(f.float().mean() for f in model(x).values()).backward()
            if attempt:
                seconds[dtype] = min(seconds[dtype], time.perf_counter() - started)
    ratio = seconds[torch.float32] / seconds[torch.bfloat16]
    if 0.85 < ratio < 1.5:
        pytest.skip(f"the two precisions are too close on this CPU to call ({ratio:.2f}x)")
    monkeypatch.delenv("NST_CPU_BF16", raising=False)
    device.cpu_prefers_bf16.cache_clear()
    try:
        chosen = device.compute_dtype("cpu")
    finally:
        device.cpu_prefers_bf16.cache_clear()
    assert chosen == (torch.bfloat16 if ratio > 1 else torch.float32), f"bfloat16 ran {ratio:.2f}x float32's speed"


@pytest.mark.parametrize(
    ("capability", "expected"),
    [
        ((6, 1), torch.float32),  # Pascal: no bfloat16 tensor cores
        ((7, 5), torch.float32),  # Turing
        ((8, 0), torch.bfloat16),  # Ampere
        ((9, 0), torch.bfloat16),  # Hopper
    ],
)
def test_gpus_with_bfloat16_tensor_cores_use_them(capability, expected):
    assert device.cuda_dtype(capability) == expected


def test_only_cuda_replays_graphs_and_the_environment_can_turn_it_off(monkeypatch):
    monkeypatch.delenv("NST_CUDA_GRAPHS", raising=False)
    assert device.use_cuda_graphs("cuda") and device.use_cuda_graphs("cuda:1")
    assert not device.use_cuda_graphs("cpu") and not device.use_cuda_graphs("mps")
    monkeypatch.setenv("NST_CUDA_GRAPHS", "0")
    assert not device.use_cuda_graphs("cuda")
