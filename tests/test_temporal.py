from __future__ import annotations

import pytest
import torch

from skelgraph.nn.temporal import (
    CausalTemporalAttention,
    KVCache,
    alibi_ring_bias,
    alibi_slopes,
)

V = 17


@pytest.fixture
def attention() -> CausalTemporalAttention:
    torch.manual_seed(0)
    return CausalTemporalAttention(16, heads=4).eval()


def test_shapes_and_repr(attention: CausalTemporalAttention) -> None:
    x = torch.randn(2 * V, 10, 16)
    assert attention(x).shape == (2 * V, 10, 16)
    mask = torch.ones(2 * V, 10, dtype=torch.bool)
    assert attention(x, mask).shape == (2 * V, 10, 16)
    assert str(attention) == (
        "CausalTemporalAttention(16, heads=4, mlp_ratio=4.0, dropout=0.0, window=None)"
    )


def test_invalid_arguments(attention: CausalTemporalAttention) -> None:
    with pytest.raises(ValueError, match="multiple of heads"):
        CausalTemporalAttention(10, heads=4)
    with pytest.raises(ValueError, match=r"expected shape \(N, T, 16\)"):
        attention(torch.randn(4, 5, 8))
    with pytest.raises(ValueError, match="mask: expected a bool tensor"):
        attention(torch.randn(4, 5, 16), torch.ones(4, 5))
    with pytest.raises(ValueError, match=r"step: x_t: expected shape \(4, 16\)"):
        attention.step(torch.randn(3, 16), attention.init_cache(4))
    with pytest.raises(ValueError, match="window: expected an integer >= 1 or None, got 0"):
        CausalTemporalAttention(16, heads=4, window=0)
    windowed = CausalTemporalAttention(16, heads=4, window=3)
    with pytest.raises(ValueError, match="cache: expected a cache of window 3, got None"):
        windowed.step(torch.randn(4, 16), attention.init_cache(4))


def test_alibi_slopes() -> None:
    torch.testing.assert_close(alibi_slopes(4), torch.tensor([2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8]))
    torch.testing.assert_close(alibi_slopes(8), 2.0 ** -torch.arange(1.0, 9.0))
    # not a power of two: the 4-head slopes, then every other slope of the 8-head sequence
    torch.testing.assert_close(alibi_slopes(6)[4:], torch.tensor([2.0**-1, 2.0**-3]))
    assert (alibi_slopes(6)[:4] == alibi_slopes(4)).all()
    with pytest.raises(ValueError, match="heads"):
        alibi_slopes(0)


def test_relative_position_bias(attention: CausalTemporalAttention) -> None:
    """Only the distance between frames matters: a clip gives the same output wherever it
    starts, and the bias is -m_h (t - s) inside the causal band."""
    bias = attention.position_bias(5)
    assert bias.shape == (1, 4, 5, 5)
    torch.testing.assert_close(bias[0, 1, 4, 1], -3 * attention.slopes[1])
    assert bias[0, :, 1, 2].eq(float("-inf")).all()
    x = torch.randn(V, 10, 16)
    with torch.no_grad():
        whole = attention(x)
        shifted = attention(torch.cat([torch.randn(V, 4, 16), x], dim=1), None)[:, 4:]
    assert not torch.allclose(shifted, whole)  # earlier frames are seen ...
    windowed = CausalTemporalAttention(16, heads=4, window=3).eval()
    windowed.load_state_dict(attention.state_dict())
    with torch.no_grad():
        late = windowed(torch.cat([torch.randn(V, 4, 16), x], dim=1))[:, 4 + 2 :]
        torch.testing.assert_close(late, windowed(x)[:, 2:], atol=1e-5, rtol=1e-5)


def test_queries_give_the_full_pass_at_their_frames(attention: CausalTemporalAttention) -> None:
    """Output and attention at chosen frames (a different set per node, with padding) equal
    the full pass's rows there."""
    x = torch.randn(V, 9, 16)
    mask = torch.ones(V, 9, dtype=torch.bool)
    mask[1, 6:] = False
    queries = torch.tensor([[3, 8]] * V)
    queries[1] = torch.tensor([0, 5])
    rows = torch.arange(V).unsqueeze(1)
    with torch.no_grad():
        full, weights = attention(x, mask, return_attention=True)
        some = attention(x, mask, queries=queries)
        some_too, some_weights = attention(x, mask, return_attention=True, queries=queries)
    assert some.shape == (V, 2, 16) and some_weights.shape == (V, 4, 2, 9)
    torch.testing.assert_close(some, full[rows, queries])
    torch.testing.assert_close(some_too, full[rows, queries])
    torch.testing.assert_close(some_weights, weights.transpose(1, 2)[rows, queries].transpose(1, 2))
    with pytest.raises(ValueError, match="queries"):
        attention(x, mask, queries=queries[:2])


def test_position_bias_is_made_once_for_both_modes(attention: CausalTemporalAttention) -> None:
    """The full pass's bias of a length is made once and reused, under inference mode too, and
    the one made under inference mode serves training (it is not an inference tensor)."""
    attention._bias_cache = None
    x = torch.randn(V, 6, 16)
    with torch.inference_mode():
        first = attention.position_bias(6)
        out = attention(x)
        assert attention.position_bias(6) is first
    assert not first.is_inference()
    assert attention.position_bias(6) is first
    with torch.no_grad():
        torch.testing.assert_close(attention(x), out, rtol=0, atol=0)
    assert attention.position_bias(7) is not first


@pytest.mark.parametrize("window", [None, 3])
def test_cache_bias_is_the_full_pass_bias(window: int | None) -> None:
    """The bias a cache gives the held frames is the full pass's bias of the new frame for the
    frames in those slots (a ring's slot j holds frame t - ((s - j) mod W))."""
    layer = CausalTemporalAttention(16, heads=4, window=window)
    full = layer.position_bias(10)[0]  # [H, t, s]
    cache = layer.init_cache(1, max_len=4)
    for t in range(10):
        slot, held = cache.claim()
        if window is None:
            frames = list(range(held))
        else:
            frames = [t - (slot - j) % window for j in range(held)]
        torch.testing.assert_close(cache.bias(slot, held), full[:, t, frames], rtol=0, atol=0)
    if window is not None:
        ring = alibi_ring_bias(layer.slopes, window)
        assert ring.shape == (window, 4, window)
        torch.testing.assert_close(ring[1, :, 2], -2 * layer.slopes)  # slot 2 is 2 frames back


def test_window_limits_what_a_frame_sees() -> None:
    torch.manual_seed(0)
    layer = CausalTemporalAttention(16, heads=4, window=4).eval()
    x = torch.randn(V, 12, 16)
    changed = x.clone()
    changed[:, :5] = torch.randn_like(changed[:, :5]) * 5  # frames 0..4
    with torch.no_grad():
        a, b = layer(x), layer(changed)
    torch.testing.assert_close(a[:, 8:], b[:, 8:])  # frame t sees t-3..t only
    assert not torch.allclose(a[:, 7], b[:, 7])
    # windows longer than the clip change nothing
    wide = CausalTemporalAttention(16, heads=4, window=12).eval()
    wide.load_state_dict(layer.state_dict())
    full = CausalTemporalAttention(16, heads=4).eval()
    full.load_state_dict(layer.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(wide(x), full(x))


def test_causal(attention: CausalTemporalAttention) -> None:
    x = torch.randn(V, 12, 16)
    out = attention(x)
    for t in (0, 5, 10):
        changed = x.clone()
        changed[:, t + 1 :] = torch.randn_like(changed[:, t + 1 :]) * 5
        torch.testing.assert_close(attention(changed)[:, : t + 1], out[:, : t + 1])
        # the check can fail: changing frame t itself does change the output at t
        changed[:, t] += 1.0
        assert (attention(changed)[:, t] - out[:, t]).abs().max() > 1e-3


def test_mask_ignores_padded_frames(attention: CausalTemporalAttention) -> None:
    x = torch.randn(3, 12, 16)
    mask = torch.zeros(3, 12, dtype=torch.bool)
    mask[0, :8] = True  # padded at the end
    mask[1, 3:] = True  # padded at the start
    mask[2, 2:9] = True  # padded on both sides
    padded = torch.where(mask[..., None], x, torch.randn_like(x) * 100)
    out = attention(padded, mask)
    assert torch.isfinite(out).all()
    for node in range(3):
        real = mask[node].nonzero().squeeze(1)
        expected = attention(x[node : node + 1, real])
        torch.testing.assert_close(out[node : node + 1, real], expected, atol=1e-5, rtol=1e-5)


def test_mask_without_real_frames_is_finite(attention: CausalTemporalAttention) -> None:
    out = attention(torch.randn(2, 6, 16), torch.zeros(2, 6, dtype=torch.bool))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(("window", "max_len"), [(None, None), (None, 5), (16, None), (1, None)])
def test_streaming_matches_full_pass(window: int | None, max_len: int | None) -> None:
    torch.manual_seed(0)
    attention = CausalTemporalAttention(16, heads=4, window=window).eval()
    x = torch.randn(2 * V, 64, 16)
    with torch.no_grad():
        full = attention(x)
        cache = attention.init_cache(2 * V, max_len=max_len)
        steps = []
        for t in range(64):  # four times the window: the ring buffer wraps around
            y_t, cache = attention.step(x[:, t], cache)
            steps.append(y_t)
    assert cache.length == 64
    assert cache.capacity == (window or (64 if max_len is None else 80))
    torch.testing.assert_close(torch.stack(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_cache_preallocates_and_doubles(attention: CausalTemporalAttention) -> None:
    cache = attention.init_cache(3, max_len=4)
    assert isinstance(cache, KVCache) and cache.capacity == 4
    pointer = cache.key.data_ptr()
    with torch.no_grad():
        for _ in range(4):
            attention.step(torch.randn(3, 16), cache)
        assert cache.key.data_ptr() == pointer  # no reallocation while it fits
        attention.step(torch.randn(3, 16), cache)
    assert cache.capacity == 8 and cache.length == 5


def test_gradient_flows() -> None:
    torch.manual_seed(0)
    layer = CausalTemporalAttention(16, heads=2, dropout=0.1)
    x = torch.randn(V, 8, 16, requires_grad=True)
    layer(x, torch.rand(V, 8) > 0.3).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, param in layer.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_reset_parameters(attention: CausalTemporalAttention) -> None:
    with torch.no_grad():
        attention.norm1.weight.fill_(3.0)
    attention.reset_parameters()
    assert torch.equal(attention.norm1.weight, torch.ones(16))
