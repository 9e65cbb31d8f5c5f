"""Small hand-written programs the pass tests start from (text IR, the passes' house style)."""

from __future__ import annotations

import numpy as np

from edgetune.compiler.ir_text import parse_graph
from edgetune.compiler.verify import verify

SGD = "{dampening=0.0, maximize=false, momentum=0.0, nesterov=false, weight_decay=0.0}"

# conv 1x1 -> eval BatchNorm (frozen scale, trainable shift) -> ReLU6 -> global mean -> linear,
# bias-only fine-tuning with SGD: what autodiff + the optimizer write for a MobileNet block.
CONV_BN_RELU6 = f'''program p {{
  input %x: f32[2,3,8,8]
  input %y: i64[2]
  param %conv.weight: f32[4,3,1,1]
  param %bn.weight: f32[4]
  param %bn.bias: f32[4] trainable
  buffer %bn.running_mean: f32[4]
  buffer %bn.running_var: f32[4]
  param %fc.weight: f32[5,4]
  param %fc.bias: f32[5] trainable
  state %optim.lr: f32[]

  forward:
    %z: f32[2,4,8,8] = conv2d(%x, %conv.weight) {{dilation=[1, 1], groups=1, padding=[0, 0], stride=[1, 1]}}
    %b: f32[2,4,8,8] = batch_norm_infer(%z, %bn.weight, %bn.bias, %bn.running_mean, %bn.running_var) {{eps=1e-05}}
    %a: f32[2,4,8,8] = hardtanh(%b) {{max=6.0, min=0.0}}
    %p: f32[2,4] = mean(%a) {{dims=[2, 3], keepdim=false}}
    %o: f32[2,5] = linear(%p, %fc.weight, %fc.bias)

  loss:
    %l: f32[] = cross_entropy(%o, %y)

  backward:
    %do: f32[2,5] = cross_entropy_backward(%l, %o, %y)
    %dfc: f32[5] = sum(%do) {{dims=[0], keepdim=false}}
    %dp: f32[2,4] = matmul(%do, %fc.weight)
    %dpe: f32[2,4,1,1] = reshape(%dp) {{shape=[2, 4, 1, 1]}}
    %dpx: f32[2,4,8,8] = expand(%dpe) {{shape=[2, 4, 8, 8]}}
    %da: f32[2,4,8,8] = hardtanh_backward(%dpx, %a) {{max=6.0, min=0.0}}
    %dbn: f32[4] = sum(%da) {{dims=[0, 2, 3], keepdim=false}}

  update:
    %fc.bias.next: f32[5] = sgd_update(%fc.bias, %dfc, %optim.lr) {SGD}
    %bn.bias.next: f32[4] = sgd_update(%bn.bias, %dbn, %optim.lr) {SGD}

  output loss = %l
  assign %fc.bias <- %fc.bias.next
  assign %bn.bias <- %bn.bias.next
}}
'''


def conv_bn_relu6_data(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    f = np.float32
    return {"conv.weight": rng.standard_normal((4, 3, 1, 1)).astype(f),
            "bn.weight": rng.uniform(0.5, 2, 4).astype(f), "bn.bias": rng.standard_normal(4).astype(f),
            "bn.running_mean": rng.standard_normal(4).astype(f), "bn.running_var": rng.uniform(0.5, 2, 4).astype(f),
            "fc.weight": rng.standard_normal((5, 4)).astype(f), "fc.bias": np.zeros(5, f),
            "optim.lr": np.array(0.1, f)}


def conv_bn_relu6_feeds(seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": (3 * rng.standard_normal((2, 3, 8, 8))).astype(np.float32), "y": np.array([1, 3])}


def load(text: str, data: dict | None = None):
    return verify(parse_graph(text, initial=data))


def edit(text: str, *changes: tuple[str, str]) -> str:
    """`text` with each (old, new) applied; every `old` must occur exactly once. Expected
    programs are written as their `before` program plus the lines the pass changes, so a test
    shows the diff and the unchanged sections are not written twice."""
    for old, new in changes:
        assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
        text = text.replace(old, new)
    return text


# conv 1x1 -> relu -> conv 3x3 -> relu -> mean, bias-only (as the torch frontend + autodiff write
# it, sources stripped): a grad-input kernel followed by an activation derivative.
CONV_RELU_CHAIN = f'''program m {{
  input %x: f32[2,3,6,6]
  input %target: i64[2]
  param %c1.weight: f32[4,3,1,1]
  param %c1.bias: f32[4] trainable
  param %c2.weight: f32[4,4,3,3]
  param %c2.bias: f32[4] trainable
  const %c0: f32[] = 1.0
  const %c1: f32[] = 0.02777777798473835
  state %optim.lr: f32[]
  state %optim.step: f32[]

  forward:
    %t0: f32[2,4,6,6] = conv2d(%x, %c1.weight, %c1.bias) {{dilation=[1, 1], groups=1, padding=[0, 0], stride=[1, 1]}}
    %t1: f32[2,4,6,6] = relu(%t0)
    %t2: f32[2,4,6,6] = conv2d(%t1, %c2.weight, %c2.bias) {{dilation=[1, 1], groups=1, padding=[1, 1], stride=[1, 1]}}
    %t3: f32[2,4,6,6] = relu(%t2)
    %t4: f32[2,4] = mean(%t3) {{dims=[2, 3], keepdim=false}}

  loss:
    %t5: f32[] = cross_entropy(%t4, %target) {{ignore_index=-100, label_smoothing=0.0, reduction="mean"}}

  backward:
    %t6: f32[2,4] = cross_entropy_backward(%c0, %t4, %target) {{ignore_index=-100, label_smoothing=0.0, reduction="mean"}}
    %t7: f32[2,4,1,1] = reshape(%t6) {{shape=[2, 4, 1, 1]}}
    %t8: f32[2,4,1,1] = mul(%t7, %c1)
    %t9: f32[2,4,6,6] = expand(%t8) {{shape=[2, 4, 6, 6]}}
    %t10: f32[2,4,6,6] = relu_backward(%t9, %t3)
    %t11: f32[2,4,6,6] = conv2d_grad_input(%t10, %c2.weight) {{dilation=[1, 1], groups=1, input_shape=[2, 4, 6, 6], padding=[1, 1], stride=[1, 1]}}
    %t12: f32[4] = sum(%t10) {{dims=[0, 2, 3], keepdim=false}}
    %t13: f32[2,4,6,6] = relu_backward(%t11, %t1)
    %t14: f32[4] = sum(%t13) {{dims=[0, 2, 3], keepdim=false}}

  update:
    %optim.step.next: f32[] = add(%optim.step, %c0)
    %c1.bias.next: f32[4] = sgd_update(%c1.bias, %t14, %optim.lr) {SGD}
    %c2.bias.next: f32[4] = sgd_update(%c2.bias, %t12, %optim.lr) {SGD}

  output loss = %t5
  output output = %t4
  assign %optim.step <- %optim.step.next
  assign %c1.bias <- %c1.bias.next
  assign %c2.bias <- %c2.bias.next
}}
'''


def conv_relu_chain_data(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    f = np.float32
    return {"c1.weight": rng.standard_normal((4, 3, 1, 1)).astype(f), "c1.bias": rng.standard_normal(4).astype(f),
            "c2.weight": (0.3 * rng.standard_normal((4, 4, 3, 3))).astype(f), "c2.bias": rng.standard_normal(4).astype(f),
            "optim.lr": np.array(0.1, f), "optim.step": np.array(0.0, f)}


def conv_relu_chain_feeds(seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((2, 3, 6, 6)).astype(np.float32), "target": np.array([1, 3])}
