"""The PyTorch frontend's lowerings of view / indexing / resampling ops onto existing ops (issue 14):
index.Tensor and index_select (embedding row gathers, scatter-add gradient into a trainable
table), as_strided (identity / permute / static gather), constant_pad_nd (concat / slice),
bilinear and nearest upsampling (matmuls with interpolation matrices), linalg_vector_norm and
single-bound clamp (F.normalize), torch.export's _assert_tensor_metadata, and scaled dot-product
attention with masks, causal flag, grouped-query heads and attention dropout.

Each model trains 3 SGD steps on the reference and cpu backends against PyTorch (losses and every
parameter), and the forward alone is checked where the lowering is all there is."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import edgetune as et
from support import assert_training_matches_torch, edgetune_run, torch_reference_run


def _batches(x_fn, classes, steps=3, batch=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [((x_fn(g),), torch.randint(0, classes, (batch,), generator=g)) for _ in range(steps)]


def _check(model, batches, spec=None, rtol=1e-4, atol=1e-6):
    (x,), y = batches[0]
    prog = et.compile(model, (x,), y, peft=spec or et.peft.Full(), optimizer=et.optim.SGD(lr=0.05))
    for backend in ("reference", "cpu"):
        ours, ours_state, _ = edgetune_run(prog, batches, backend=backend)
        theirs, their_state = torch_reference_run(model, prog, batches)
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, err_msg=backend)
        for k in their_state:
            np.testing.assert_allclose(ours_state[k], their_state[k], rtol=rtol, atol=atol, err_msg=f"{backend} {k}")
    return prog


class RelativeBias(nn.Module):
    """Swin-style attention scores plus a trainable bias table gathered by an index buffer."""

    def __init__(self, window=3, heads=2, dim=8):
        super().__init__()
        self.heads, self.window = heads, window
        self.table = nn.Parameter(torch.randn((2 * window - 1) ** 2, heads) * 0.1)
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
        self.register_buffer("index", rel[..., 0] * (2 * window - 1) + rel[..., 1], persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.head = nn.Linear(dim * window * window, 5)

    def forward(self, x):  # x [B, N=window^2, dim]
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = q @ k.transpose(-2, -1)
        bias = self.table[self.index.view(-1)].view(n, n, -1).permute(2, 0, 1)  # index.Tensor
        attn = (attn + bias.unsqueeze(0)).softmax(-1)
        return self.head((attn @ v).transpose(1, 2).reshape(b, -1))


def test_index_tensor_gathers_a_trainable_table():
    torch.manual_seed(0)
    prog = _check(RelativeBias(), _batches(lambda g: torch.randn(4, 9, 8, generator=g), 5))
    assert any(n.op == "embedding_backward" for n in prog.graph.nodes)  # the table's scatter-add


class IndexOps(nn.Module):
    """index_select, one index tensor (2-d, so the result gains a dim), two adjacent broadcast
    index tensors (one with a negative entry), all on an activation that depends on a parameter."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(6, 5) * 0.3)
        self.register_buffer("cols", torch.tensor([4, 0, -1, 2]), persistent=False)
        self.register_buffer("rows", torch.tensor([[0, 5], [3, 3]]), persistent=False)
        self.head = nn.Linear(6 * 3 + 2 * 2 * 5 + 2 * 4, 3)

    def forward(self, x):  # x [B, 6, 5]
        y = x * self.w
        a = torch.index_select(y, 2, self.cols[:3].clamp(min=0))  # [B, 6, 3]
        b = y[:, self.rows]                                        # [B, 2, 2, 5]
        c = y[:, self.rows[:, 0:1], self.cols]                     # [B, 2, 4]
        return self.head(torch.cat([a.flatten(1), b.flatten(1), c.flatten(1)], 1))


def test_index_select_and_advanced_indexing():
    torch.manual_seed(0)
    _check(IndexOps(), _batches(lambda g: torch.randn(4, 6, 5, generator=g), 3))


class StridedAndPadded(nn.Module):
    """ConvNeXt-style: a channels-last round trip written with as_strided, Swin-style padding."""

    def __init__(self):
        super().__init__()
        self.dw = nn.Conv2d(4, 4, 7, padding=3, groups=4)
        self.norm = nn.LayerNorm(4)
        self.head = nn.Linear(4 * 7 * 9, 3)

    def forward(self, x):  # [B, 4, 5, 6]
        y = self.dw(x)
        b, c, h, w = y.shape
        nhwc = torch.as_strided(y.contiguous(), (b, h, w, c), (c * h * w, w, 1, h * w))  # a permute
        y = self.norm(nhwc)
        y = F.pad(y.permute(0, 3, 1, 2), (1, 2, 0, 2), value=0.5)  # [B, 4, 7, 9]
        flat = torch.as_strided(y.contiguous(), (b, c * 7 * 9), (c * 7 * 9, 1))  # a reshape
        return self.head(flat)


def test_as_strided_and_constant_pad():
    torch.manual_seed(0)
    _check(StridedAndPadded(), _batches(lambda g: torch.randn(4, 4, 5, 6, generator=g), 3))


def test_as_strided_general_gather_and_negative_pad():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(3, 8) * 0.5)
            self.head = nn.Linear(3 * 3 + 2 * 5, 2)

        def forward(self, x):  # [B, 3, 8]
            y = x * self.w
            win = torch.as_strided(y.contiguous(), (y.shape[0], 3, 3), (24, 8, 2), 1)  # overlapping windows
            crop = F.pad(y[:, :2], (-1, -2))  # negative padding crops
            return self.head(torch.cat([win.flatten(1), crop.flatten(1)], 1))
    torch.manual_seed(0)
    _check(M(), _batches(lambda g: torch.randn(4, 3, 8, generator=g), 2))


@pytest.mark.parametrize("mode,align", [("bilinear", False), ("bilinear", True), ("nearest", None)])
def test_upsampling(mode, align):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.head = nn.Linear(4 * 7 * 10 + 4 * 10 * 10, 3)

        def forward(self, x):  # [B, 3, 5, 5]
            y = self.conv(x)
            kw = {} if mode == "nearest" else {"align_corners": align}
            a = F.interpolate(y, size=(7, 10), mode=mode, **kw)
            b = F.interpolate(y, scale_factor=2, mode=mode, **kw)
            return self.head(torch.cat([a.flatten(1), b.flatten(1)], 1))
    torch.manual_seed(0)
    _check(M(), _batches(lambda g: torch.randn(4, 3, 5, 5, generator=g), 3))


def test_normalize_and_single_bound_clamps():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(6, 8)
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            z = F.normalize(self.proj(x), dim=-1)  # linalg_vector_norm + clamp_min
            return self.head(z.clamp(min=-0.3) + z.clamp(max=0.25))
    torch.manual_seed(0)
    _check(M(), _batches(lambda g: torch.randn(4, 6, generator=g), 3))


def test_to_dtype_assertions_are_ignored():
    class RMSNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(6))
            self.head = nn.Linear(6, 3)

        def forward(self, x):
            h = x.to(torch.float32)
            h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)
            return self.head(self.weight * h.to(x.dtype))
    torch.manual_seed(0)
    _check(RMSNorm(), _batches(lambda g: torch.randn(4, 6, generator=g), 3))


class Attention(nn.Module):
    def __init__(self, kv_heads=2, causal=False, mask="none", dropout=0.0):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(8, 8), nn.Linear(8, 2 * kv_heads), nn.Linear(8, 2 * kv_heads)
        self.kv_heads, self.causal, self.mask, self.dropout = kv_heads, causal, mask, dropout
        self.head = nn.Linear(8 * 5, 3)

    def forward(self, x):  # [B, 5, 8]
        b, t, _ = x.shape
        q = self.q(x).view(b, t, 4, 2).transpose(1, 2)
        k = self.k(x).view(b, t, self.kv_heads, 2).transpose(1, 2)
        v = self.v(x).view(b, t, self.kv_heads, 2).transpose(1, 2)
        mask = None
        if self.mask == "bool":
            mask = torch.ones(t, t, dtype=torch.bool).triu(2).logical_not()
        elif self.mask == "additive":
            mask = torch.linspace(-1, 0, t * t).view(t, t)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout, is_causal=self.causal,
                                             enable_gqa=self.kv_heads != 4)
        return self.head(out.transpose(1, 2).reshape(b, -1))


@pytest.mark.parametrize("kv_heads,causal,mask", [(4, False, "bool"), (4, True, "none"), (2, False, "additive"),
                                                  (1, True, "none")])
def test_sdpa_masks_causal_and_grouped_heads(kv_heads, causal, mask):
    torch.manual_seed(0)
    _check(Attention(kv_heads, causal, mask), _batches(lambda g: torch.randn(4, 5, 8, generator=g), 3))


def test_sdpa_dropout_uses_edgetunes_stream():
    """Attention dropout compiles to a dropout node (edgetune's counter-based stream, so its masks
    differ from PyTorch's): p = 0 matches PyTorch exactly; p > 0 drops about p of the weights and
    changes from step to step."""
    torch.manual_seed(0)
    model = Attention(4, False, "none", dropout=0.5)
    batches = _batches(lambda g: torch.randn(4, 5, 8, generator=g), 3)
    (x,), y = batches[0]
    prog = et.compile(model, (x,), y, optimizer=et.optim.SGD(lr=0.05))
    drops = [n for n in prog.graph.nodes if n.op == "dropout"]
    assert len(drops) == 1 and drops[0].attrs["p"] == 0.5
    model.dropout = 0.0
    prog0 = et.compile(model, (x,), y, optimizer=et.optim.SGD(lr=0.05))
    assert not any(n.op == "dropout" for n in prog0.graph.nodes)
    assert_training_matches_torch(model, prog0, batches)
    # the same stream on both backends (portable), and it changes the step: a dropped-out loss
    # differs from the p = 0 program's on the same weights and batch
    dropped = [et.Session(prog, backend=b).step(x.numpy(), y.numpy()) for b in ("reference", "cpu")]
    plain = et.Session(prog0, backend="cpu").step(x.numpy(), y.numpy())
    np.testing.assert_allclose(dropped[0], dropped[1], rtol=1e-5)
    assert abs(dropped[1] - plain) > 1e-4 * abs(plain)


def test_what_is_not_lowered_is_reported_with_its_source():
    class M(nn.Module):
        def forward(self, x):
            return x[x > 0].sum().reshape(1, 1).expand(x.shape[0], 2)  # a data-dependent shape
    with pytest.raises(et.UnsupportedOpError) as e:
        et.compile(M(), (torch.randn(4, 3),), torch.zeros(4, dtype=torch.long))
    assert "index.Tensor (boolean-mask indexing" in str(e.value), str(e.value)


# ---- whole blocks of modern vision families, in plain torch ------------------------------------------
class ConvNeXtBlock(nn.Module):
    """depthwise 7x7 -> channels-last LayerNorm via permute -> MLP -> layer scale -> residual."""

    def __init__(self, dim=8):
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 0.5))

    def forward(self, x):
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.gamma * self.fc2(F.gelu(self.fc1(self.norm(y))))
        return x + y.permute(0, 3, 1, 2)


class SwinBlock(nn.Module):
    """Shifted-window attention: pad the map to whole windows, roll by half a window, partition,
    attention with a relative-position bias table, reverse, roll back, crop."""

    def __init__(self, dim=8, heads=2, window=3, shift=1):
        super().__init__()
        self.dim, self.heads, self.window, self.shift = dim, heads, window, shift
        self.norm = nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.table = nn.Parameter(torch.randn((2 * window - 1) ** 2, heads) * 0.1)
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
        self.register_buffer("index", rel[..., 0] * (2 * window - 1) + rel[..., 1], persistent=False)

    def forward(self, x):  # [B, H, W, C]
        b, h, w, c = x.shape
        ws, n = self.window, self.window * self.window
        y = F.pad(self.norm(x), (0, 0, 0, (-w) % ws, 0, (-h) % ws))
        hp, wp = y.shape[1], y.shape[2]
        y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        win = y.view(b, hp // ws, ws, wp // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, n, c)
        q, k, v = self.qkv(win).reshape(-1, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q * (c // self.heads) ** -0.5) @ k.transpose(-2, -1)
        attn = attn + self.table[self.index.view(-1)].view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
        out = self.proj((attn.softmax(-1) @ v).transpose(1, 2).reshape(-1, n, c))
        out = out.view(b, hp // ws, wp // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)
        out = torch.roll(out, shifts=(self.shift, self.shift), dims=(1, 2))[:, :h, :w].contiguous()
        return x + out


class ModernVision(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 2, stride=2)
        self.convnext = ConvNeXtBlock()
        self.swin = SwinBlock()
        self.head = nn.Linear(8, 4)

    def forward(self, x):  # [B, 3, 10, 14] -> 5 x 7 map: padded to 6 x 9 windows
        y = self.convnext(self.stem(x))
        y = self.swin(y.permute(0, 2, 3, 1))
        return self.head(y.mean((1, 2)))


@pytest.mark.parametrize("spec", ["full", "last-k", "bias-only"])
def test_convnext_and_swin_blocks(spec):
    torch.manual_seed(0)
    peft = {"full": et.peft.Full(), "last-k": et.peft.LastK(3), "bias-only": et.peft.BiasOnly()}[spec]
    _check(ModernVision(), _batches(lambda g: torch.randn(4, 3, 10, 14, generator=g), 4), spec=peft)
