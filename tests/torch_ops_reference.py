"""PyTorch reference dump for the op parity test (tests/test_torch_ops.cpp).

    /usr/bin/python3 tests/torch_ops_reference.py OUT_DIR

writes OUT_DIR/ops.safetensors. For every case (one op of autograd/ops.h, or a view, on random
float32 inputs of odd shapes, seed fixed) it stores

    <case>.in0, <case>.in1, ...   the inputs: float32, or int64 class targets
    <case>.R                      float32, the shape of the output: the test backpropagates sum(out * R)
    <case>.out                    the output, float64 (uint8 for comparisons)
    <case>.grad<i>                float64 d sum(out * R) / d in<i>, only for the inputs that require grad
    <case>.<extra>                float64 extra results (batch_norm's updated running_mean/running_var)

The reference values are computed by PyTorch in float64 from the float32 inputs, so they are the
exact answer for those inputs up to float64 rounding; the C++ side computes in float32. PyTorch's
own float32 result is compared with the same reference, and its relative L2 errors are stored in
the metadata (`<case>.torch_f32_fwd`, `<case>.torch_f32_grad`) so the test can print them beside
the engine's. Metadata `cases` lists every case name in order (comma-separated); `<case>.info`
is a JSON description (op, arguments, shapes) for humans.

Run with Debian's PyTorch (/usr/bin/python3). Exit code 77 (ctest: skipped) when torch is missing.
"""

import json
import math
import os
import sys

sys.dont_write_bytecode = True  # keep tests/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

try:
    import torch
    import torch.nn.functional as F
except ImportError as e:  # pragma: no cover - depends on the machine
    print(f"skipped: PyTorch is not available to {sys.executable} ({e})")
    sys.exit(77)

import safetensors_io

SEED = 20240601
GEN = torch.Generator().manual_seed(SEED)


# ---- input makers (float32, from the one seeded generator)
def randn(*shape, scale=1.0):
    return torch.randn(shape, generator=GEN) * scale


def uniform(*shape, lo=-2.0, hi=2.0):
    return torch.rand(shape, generator=GEN) * (hi - lo) + lo


def away_from_zero(*shape, gap=0.05, hi=2.0):
    """Values with |x| in [gap, hi], random sign: keeps kinks (abs, relu) out of reach."""
    mag = uniform(*shape, lo=gap, hi=hi)
    sign = torch.where(torch.rand(shape, generator=GEN) < 0.5, -1.0, 1.0)
    return mag * sign


def mask01(*shape):
    return (torch.rand(shape, generator=GEN) < 0.5).float()


def classes(num_classes, *shape):
    return torch.randint(0, num_classes, shape, generator=GEN, dtype=torch.int64)


def big_logits(*shape):
    """Logits of moderate size with a sprinkling of large ones (|x| up to 50): BCE must stay exact."""
    x = randn(*shape, scale=4.0)
    flat = x.view(-1)
    idx = torch.randperm(flat.numel(), generator=GEN)[: max(6, flat.numel() // 8)]
    big = torch.tensor([50.0, -50.0, 30.0, -30.0, 17.0, -17.0, 45.5, -44.25])
    flat[idx] = big[torch.arange(idx.numel()) % big.numel()]
    return x


def pysilu(x):
    return torch.where(x >= 0, x, x / (1 + x * x))


def dice_loss(logits, target, smooth=1.0):
    p = torch.sigmoid(logits)
    return 1 - (2 * (p * target).sum() + smooth) / (p.sum() + target.sum() + smooth)


def center_crop(x, h, w):
    top = (x.shape[-2] - h) // 2
    left = (x.shape[-1] - w) // 2
    return x[..., top:top + h, left:left + w]


def batch_norm_case(x, weight, bias, rm, rv, training, momentum, eps):
    """F.batch_norm on clones of the running stats; returns (out, {updated stats}) when they exist."""
    rm = rm.clone() if rm is not None else None
    rv = rv.clone() if rv is not None else None
    out = F.batch_norm(x, rm, rv, weight, bias, training=training, momentum=momentum, eps=eps)
    extras = {}
    if rm is not None:
        extras["running_mean_out"] = rm
        extras["running_var_out"] = rv
    return out, extras


# ---- the cases. Each: name, fn(inputs) -> out or (out, extras), [(input, requires_grad)], info.
# The C++ table in tests/test_torch_ops.cpp has one row per name, with the same argument order.
CASES = []


def case(name, fn, inputs, **info):
    assert all(c.isalnum() or c == "_" for c in name), name
    assert name not in (c[0] for c in CASES), name
    CASES.append((name, fn, inputs, info))


def G(t):  # an input that requires grad
    return (t, True)


def C(t):  # a constant input
    return (t, False)


def build_cases():
    # ---- elementwise, binary (broadcasting) and scalar forms
    case("add_same", lambda x: x[0] + x[1], [G(randn(37, 29)), G(randn(37, 29))], op="add")
    case("add_bcast", lambda x: x[0] + x[1], [G(randn(4, 1, 33)), G(randn(7, 1))], op="add", note="(4,1,33)+(7,1)")
    case("add_scalar", lambda x: x[0] + 2.5, [G(randn(9, 13))], op="add(x, 2.5)")
    case("sub_bcast", lambda x: x[0] - x[1], [G(randn(5, 3, 17)), G(randn(17))], op="sub")
    case("sub_bcast_rev", lambda x: x[0] - x[1], [G(randn(3, 1)), G(randn(2, 3, 11))], op="sub")
    case("sub_scalar", lambda x: x[0] - 1.5, [G(randn(11, 7))], op="sub(x, 1.5)")
    case("rsub_scalar", lambda x: 0.5 - x[0], [G(randn(11, 7))], op="rsub(x, 0.5)")
    case("mul_same", lambda x: x[0] * x[1], [G(randn(23, 19)), G(randn(23, 19))], op="mul")
    case("mul_bcast", lambda x: x[0] * x[1], [G(randn(2, 13, 1, 9)), G(randn(5, 1))], op="mul")
    case("mul_scalar", lambda x: x[0] * -3.0, [G(randn(6, 5, 7))], op="mul(x, -3)")
    case("div_same", lambda x: x[0] / x[1], [G(randn(15, 21)), G(away_from_zero(15, 21, gap=0.5))], op="div")
    case("div_bcast", lambda x: x[0] / x[1], [G(randn(6, 11)), G(uniform(11, lo=0.5, hi=2.0))], op="div")
    case("div_scalar", lambda x: x[0] / 3.0, [G(randn(13, 8))], op="div(x, 3)")
    case("rdiv_scalar", lambda x: 2.0 / x[0], [G(away_from_zero(13, 8, gap=0.5))], op="rdiv(x, 2)")
    # ---- elementwise, unary
    case("neg", lambda x: -x[0], [G(randn(17, 9))], op="neg")
    case("exp", lambda x: torch.exp(x[0]), [G(uniform(19, 7, lo=-4, hi=4))], op="exp")
    case("log", lambda x: torch.log(x[0]), [G(uniform(19, 7, lo=0.05, hi=6))], op="log")
    case("sqrt", lambda x: torch.sqrt(x[0]), [G(uniform(5, 3, 11, lo=0.05, hi=6))], op="sqrt")
    case("pow_3", lambda x: torch.pow(x[0], 3.0), [G(randn(13, 11))], op="pow(x, 3)")
    case("pow_2", lambda x: torch.pow(x[0], 2.0), [G(randn(13, 11))], op="pow(x, 2)")
    case("pow_m1_5", lambda x: torch.pow(x[0], -1.5), [G(uniform(9, 14, lo=0.2, hi=3))], op="pow(x, -1.5)")
    case("pow_0_5", lambda x: torch.pow(x[0], 0.5), [G(uniform(9, 14, lo=0.2, hi=3))], op="pow(x, 0.5)")
    case("abs", lambda x: torch.abs(x[0]), [G(away_from_zero(21, 10))], op="abs")
    case("clamp", lambda x: torch.clamp(x[0], -0.7, 0.9), [G(randn(25, 9))], op="clamp(x, -0.7, 0.9)")
    case("clamp_min", lambda x: torch.clamp(x[0], min=-0.5), [G(randn(25, 9))], op="clamp(x, -0.5, inf)")
    case("clamp_max", lambda x: torch.clamp(x[0], max=0.25), [G(randn(25, 9))], op="clamp(x, -inf, 0.25)")
    case("sigmoid", lambda x: torch.sigmoid(x[0]), [G(uniform(31, 9, lo=-12, hi=12))], op="sigmoid")
    case("tanh", lambda x: torch.tanh(x[0]), [G(uniform(31, 9, lo=-5, hi=5))], op="tanh")
    case("relu", lambda x: torch.relu(x[0]), [G(away_from_zero(4, 9, 11, gap=0.01, hi=3))], op="relu")
    case("gelu", lambda x: F.gelu(x[0]), [G(uniform(4, 9, 11, lo=-6, hi=6))], op="gelu (erf)")
    case("silu", lambda x: F.silu(x[0]), [G(uniform(4, 9, 11, lo=-8, hi=8))], op="silu")
    case("pysilu", lambda x: pysilu(x[0]), [G(uniform(4, 9, 11, lo=-6, hi=6))], op="pysilu")
    # ---- comparisons (forward only; uint8 0/1 as torch's bool)
    a, b = randn(7, 9), randn(7, 9)
    b[::2] = a[::2]  # some exact ties for eq/ge/le
    case("eq", lambda x: torch.eq(x[0], x[1]), [C(a), C(b)], op="eq")
    case("gt", lambda x: torch.gt(x[0], x[1]), [C(a.clone()), C(b.clone())], op="gt")
    case("lt_bcast", lambda x: torch.lt(x[0], x[1]), [C(randn(5, 1, 6)), C(randn(4, 1))], op="lt")
    case("ge", lambda x: torch.ge(x[0], x[1]), [C(a.clone()), C(b.clone())], op="ge")
    case("le", lambda x: torch.le(x[0], x[1]), [C(a.clone()), C(b.clone())], op="le")
    case("gt_scalar", lambda x: torch.gt(x[0], 0.25), [C(randn(8, 5))], op="gt(x, 0.25)")
    case("lt_scalar", lambda x: torch.lt(x[0], -0.1), [C(randn(8, 5))], op="lt(x, -0.1)")
    # ---- reductions
    case("sum_all", lambda x: x[0].sum(), [G(randn(5, 7, 9))], op="sum")
    case("sum_d02_keep", lambda x: x[0].sum(dim=(0, 2), keepdim=True), [G(randn(5, 7, 9))], op="sum({0,2}, keepdim)")
    case("sum_dlast", lambda x: x[0].sum(dim=-1), [G(randn(3, 6, 13))], op="sum({-1})")
    case("sum_d13", lambda x: x[0].sum(dim=(1, 3)), [G(randn(3, 4, 5, 7))], op="sum({1,3})")
    case("mean_all", lambda x: x[0].mean(), [G(randn(11, 13))], op="mean")
    case("mean_d1", lambda x: x[0].mean(dim=1), [G(randn(3, 15, 4))], op="mean({1})")
    case("mean_d03_keep", lambda x: x[0].mean(dim=(0, 3), keepdim=True), [G(randn(3, 4, 5, 7))], op="mean({0,3}, keepdim)")
    case("max_all", lambda x: x[0].amax(), [G(randn(9, 11))], op="max")
    case("max_d1", lambda x: x[0].amax(dim=1), [G(randn(6, 17))], op="max({1})")
    case("max_d02_keep", lambda x: x[0].amax(dim=(0, 2), keepdim=True), [G(randn(5, 7, 9))], op="max({0,2}, keepdim)")
    case("max_dlast", lambda x: x[0].amax(dim=-1), [G(randn(2, 3, 4, 11))], op="max({-1})")
    case("sum_to", lambda x: x[0].sum_to_size(3, 1), [G(randn(4, 3, 5))], op="sum_to((3,1))")
    # ---- views and copies (Tensor methods)
    case("view", lambda x: x[0].view(2, 3, 35), [G(randn(6, 35))], op="view")
    case("reshape", lambda x: x[0].t().reshape(5, -1), [G(randn(6, 35))], op="t().reshape({5,-1}) (copies)")
    case("permute", lambda x: x[0].permute(2, 0, 1), [G(randn(3, 5, 7))], op="permute({2,0,1})")
    case("transpose", lambda x: x[0].transpose(1, 3), [G(randn(2, 3, 4, 5))], op="transpose(1,3)")
    case("narrow", lambda x: x[0].narrow(1, 2, 5), [G(randn(4, 9))], op="narrow(1,2,5)")
    case("slice_step", lambda x: x[0][1:10:3], [G(randn(11, 4))], op="slice(0,1,10,3)")
    case("select", lambda x: x[0].select(1, -2), [G(randn(3, 6, 5))], op="select(1,-2)")
    case("expand", lambda x: x[0].expand(2, 3, 7), [G(randn(3, 1))], op="expand({2,3,7})")
    case("squeeze_unsqueeze", lambda x: x[0].squeeze().unsqueeze(0).unsqueeze(-1), [G(randn(1, 5, 1, 3))],
         op="squeeze().unsqueeze(0).unsqueeze(-1)")
    case("flatten", lambda x: x[0].flatten(1, 2), [G(randn(2, 3, 4, 5))], op="flatten(1,2)")
    case("contiguous", lambda x: x[0].t().contiguous(), [G(randn(7, 5))], op="t().contiguous()")
    case("clone", lambda x: x[0].clone(), [G(randn(7, 5))], op="clone")
    # ---- shape ops
    case("cat_d1", lambda x: torch.cat([x[0], x[1], x[2]], 1), [G(randn(2, 3, 5)), G(randn(2, 4, 5)), G(randn(2, 1, 5))],
         op="cat(dim 1)")
    case("cat_d0_4d", lambda x: torch.cat([x[0], x[1]], 0), [G(randn(1, 3, 4, 5)), G(randn(3, 3, 4, 5))], op="cat(dim 0)")
    case("cat_dlast", lambda x: torch.cat([x[0], x[1]], -1), [G(randn(3, 4, 2)), G(randn(3, 4, 7))], op="cat(dim -1)")
    case("pad_2d", lambda x: F.pad(x[0], (1, 2, 0, 3), value=0.5), [G(randn(2, 3, 5, 4))], op="pad((1,2,0,3), 0.5)")
    case("pad_last", lambda x: F.pad(x[0], (3, 1)), [G(randn(4, 7))], op="pad((3,1), 0)")
    case("pad_3d", lambda x: F.pad(x[0], (0, 1, 2, 0, 1, 1), value=-1.0), [G(randn(2, 3, 4, 5))],
         op="pad((0,1,2,0,1,1), -1)")
    case("center_crop", lambda x: center_crop(x[0], 4, 5), [G(randn(2, 3, 9, 8))], op="center_crop(4,5)")
    case("center_crop_same", lambda x: center_crop(x[0], 6, 7), [G(randn(2, 3, 6, 7))], op="center_crop(6,7)")
    case("center_crop_odd", lambda x: center_crop(x[0], 10, 3), [G(randn(1, 2, 13, 10))], op="center_crop(10,3)")
    # ---- linear algebra
    case("matmul_2d", lambda x: x[0] @ x[1], [G(randn(33, 47)), G(randn(47, 29))], op="matmul")
    case("matmul_batched", lambda x: x[0] @ x[1], [G(randn(2, 1, 9, 11)), G(randn(3, 11, 6))],
         op="matmul", note="(2,1,9,11)x(3,11,6)")
    case("matmul_3d_2d", lambda x: x[0] @ x[1], [G(randn(4, 7, 13)), G(randn(13, 5))], op="matmul", note="(4,7,13)x(13,5)")
    # ---- convolution: weight (O, C, kh, kw); scaled by 1/sqrt(fan_in) as an initialized layer
    def w(o, c, kh, kw):
        return randn(o, c, kh, kw, scale=1.0 / math.sqrt(c * kh * kw))

    case("conv_k3s1p1_bias", lambda x: F.conv2d(x[0], x[1], x[2], stride=1, padding=1),
         [G(randn(2, 3, 11, 9)), G(w(5, 3, 3, 3)), G(randn(5))], op="conv2d", stride=1, padding=1)
    case("conv_k3s2p0", lambda x: F.conv2d(x[0], x[1], None, stride=2, padding=0),
         [G(randn(2, 4, 13, 10)), G(w(6, 4, 3, 3))], op="conv2d", stride=2, padding=0)
    case("conv_k3s2p1_bias", lambda x: F.conv2d(x[0], x[1], x[2], stride=2, padding=1),
         [G(randn(1, 3, 12, 15)), G(w(4, 3, 3, 3)), G(randn(4))], op="conv2d", stride=2, padding=1)
    case("conv_k1_bias", lambda x: F.conv2d(x[0], x[1], x[2]),
         [G(randn(3, 8, 7, 5)), G(w(4, 8, 1, 1)), G(randn(4))], op="conv2d 1x1")
    case("conv_k5s1p0", lambda x: F.conv2d(x[0], x[1], None),
         [G(randn(2, 2, 9, 11)), G(w(3, 2, 5, 5))], op="conv2d 5x5")
    case("conv_k3x2_s21_p10", lambda x: F.conv2d(x[0], x[1], x[2], stride=(2, 1), padding=(1, 0)),
         [G(randn(2, 3, 10, 7)), G(w(4, 3, 3, 2)), G(randn(4))], op="conv2d", stride=(2, 1), padding=(1, 0))
    case("conv_k3s1p1_wide", lambda x: F.conv2d(x[0], x[1], None, padding=1),
         [G(randn(2, 16, 12, 10)), G(w(24, 16, 3, 3))], op="conv2d", stride=1, padding=1)
    # ---- transposed convolution: weight (Cin, Cout, kh, kw)
    case("convT_k2s2_bias", lambda x: F.conv_transpose2d(x[0], x[1], x[2], stride=2),
         [G(randn(2, 6, 5, 7)), G(w(6, 3, 2, 2)), G(randn(3))], op="conv_transpose2d", stride=2, padding=0)
    case("convT_k3s2p1", lambda x: F.conv_transpose2d(x[0], x[1], None, stride=2, padding=1),
         [G(randn(2, 4, 6, 5)), G(w(4, 5, 3, 3))], op="conv_transpose2d", stride=2, padding=1)
    case("convT_k3s2p1_bias", lambda x: F.conv_transpose2d(x[0], x[1], x[2], stride=2, padding=1),
         [G(randn(1, 3, 5, 8)), G(w(3, 2, 3, 3)), G(randn(2))], op="conv_transpose2d", stride=2, padding=1)
    case("convT_k3s1p1_bias", lambda x: F.conv_transpose2d(x[0], x[1], x[2], stride=1, padding=1),
         [G(randn(1, 3, 7, 6)), G(w(3, 2, 3, 3)), G(randn(2))], op="conv_transpose2d", stride=1, padding=1)
    # ---- pooling
    case("maxpool_k2s2", lambda x: F.max_pool2d(x[0], 2), [G(randn(2, 3, 11, 9))], op="max_pool2d(2)")
    case("maxpool_k3s2", lambda x: F.max_pool2d(x[0], 3, 2), [G(randn(2, 4, 13, 10))], op="max_pool2d(3, 2)")
    case("maxpool_k32_s21", lambda x: F.max_pool2d(x[0], (3, 2), (2, 1)), [G(randn(1, 3, 9, 8))],
         op="max_pool2d((3,2), (2,1))")
    # ---- batch norm: inputs x, weight, bias, running_mean, running_var (absent ones are skipped)
    def rstats(c):
        return C(randn(c, scale=0.5)), C(uniform(c, lo=0.5, hi=2.0))

    rm, rv = rstats(5)
    case("bn_train_affine", lambda x: batch_norm_case(x[0], x[1], x[2], x[3], x[4], True, 0.1, 1e-5),
         [G(randn(4, 5, 7, 6, scale=2.0) + 0.7), G(uniform(5, lo=0.5, hi=1.5)), G(randn(5)), rm, rv],
         op="batch_norm", training=True, momentum=0.1, eps=1e-5)
    rm, rv = rstats(6)
    case("bn_train_noaffine_2d", lambda x: batch_norm_case(x[0], None, None, x[1], x[2], True, 0.1, 1e-5),
         [G(randn(9, 6) - 1.5), rm, rv], op="batch_norm", training=True, momentum=0.1, eps=1e-5)
    case("bn_train_nostats", lambda x: batch_norm_case(x[0], x[1], x[2], None, None, True, 0.1, 1e-5),
         [G(randn(3, 4, 5, 3)), G(uniform(4, lo=0.5, hi=1.5)), G(randn(4))], op="batch_norm", training=True)
    rm, rv = rstats(3)
    case("bn_train_mom03_eps1e3", lambda x: batch_norm_case(x[0], x[1], x[2], x[3], x[4], True, 0.3, 1e-3),
         [G(randn(2, 3, 4, 5)), G(uniform(3, lo=0.5, hi=1.5)), G(randn(3)), rm, rv],
         op="batch_norm", training=True, momentum=0.3, eps=1e-3)
    rm, rv = rstats(5)
    case("bn_eval_affine", lambda x: batch_norm_case(x[0], x[1], x[2], x[3], x[4], False, 0.1, 1e-5),
         [G(randn(3, 5, 4, 6)), G(uniform(5, lo=0.5, hi=1.5)), G(randn(5)), rm, rv], op="batch_norm", training=False)
    rm, rv = rstats(4)
    case("bn_eval_noaffine", lambda x: batch_norm_case(x[0], None, None, x[1], x[2], False, 0.1, 1e-5),
         [G(randn(5, 4, 3)), rm, rv], op="batch_norm", training=False)
    # ---- losses
    bce = F.binary_cross_entropy_with_logits
    case("bce_logits_soft", lambda x: bce(x[0], x[1]), [G(big_logits(3, 1, 8, 9)), C(uniform(3, 1, 8, 9, lo=0, hi=1))],
         op="binary_cross_entropy_with_logits", note="|x| up to 50, soft targets")
    case("bce_logits_mask", lambda x: bce(x[0], x[1]), [G(big_logits(2, 1, 11, 7)), C(mask01(2, 1, 11, 7))],
         op="binary_cross_entropy_with_logits", note="|x| up to 50, 0/1 targets")
    case("bce_logits_target_grad", lambda x: bce(x[0], x[1]), [G(randn(5, 13, scale=3.0)), G(uniform(5, 13, lo=0, hi=1))],
         op="binary_cross_entropy_with_logits", note="gradient wrt target too")
    case("dice_loss", lambda x: dice_loss(x[0], x[1]), [G(randn(2, 1, 9, 7, scale=2.0)), C(mask01(2, 1, 9, 7))],
         op="dice_loss", smooth=1.0)
    case("dice_loss_big", lambda x: dice_loss(x[0], x[1]), [G(big_logits(3, 1, 6, 10)), C(mask01(3, 1, 6, 10))],
         op="dice_loss", smooth=1.0)
    case("log_softmax_2d", lambda x: F.log_softmax(x[0], 1), [G(randn(7, 10, scale=3.0))], op="log_softmax(1)")
    case("log_softmax_4d", lambda x: F.log_softmax(x[0], 1), [G(randn(2, 5, 3, 4, scale=3.0))], op="log_softmax(1)")
    case("log_softmax_d0", lambda x: F.log_softmax(x[0], 0), [G(randn(6, 4, 3, scale=3.0))], op="log_softmax(0)")
    case("log_softmax_big", lambda x: F.log_softmax(x[0], -1), [G(big_logits(4, 9))], op="log_softmax(-1)",
         note="|x| up to 50")
    case("nll_loss_2d", lambda x: F.nll_loss(x[0], x[1]), [G(randn(9, 6)), C(classes(6, 9))], op="nll_loss")
    case("nll_loss_4d", lambda x: F.nll_loss(x[0], x[1]), [G(randn(2, 4, 3, 5)), C(classes(4, 2, 3, 5))], op="nll_loss")
    case("cross_entropy_2d", lambda x: F.cross_entropy(x[0], x[1]), [G(randn(11, 7, scale=2.0)), C(classes(7, 11))],
         op="cross_entropy")
    case("cross_entropy_4d", lambda x: F.cross_entropy(x[0], x[1]), [G(randn(2, 5, 6, 7, scale=2.0)), C(classes(5, 2, 6, 7))],
         op="cross_entropy")
    case("cross_entropy_big", lambda x: F.cross_entropy(x[0], x[1]), [G(big_logits(8, 5)), C(classes(5, 8))],
         op="cross_entropy", note="|x| up to 50")


def rel_l2(a, b):
    """||a - b|| / ||b|| in float64 (||a - b|| when b is all zeros)."""
    a, b = a.double(), b.double()
    nb = b.norm().item()
    d = (a - b).norm().item()
    return d / nb if nb > 0 else d


def run(fn, inputs, dtype, R):
    """Runs one case in `dtype`: returns (out, {i: grad}, extras)."""
    xs = []
    for t, g in inputs:
        t = t.to(dtype) if t.is_floating_point() else t
        xs.append(t.clone().requires_grad_(g))
    res = fn(xs)
    out, extras = res if isinstance(res, tuple) else (res, {})
    grads = {}
    if any(g for _, g in inputs):
        (out * R.to(dtype)).sum().backward()
        for i, (t, g) in enumerate(inputs):
            if g:
                grads[i] = xs[i].grad
    return out.detach(), grads, {k: v.detach() for k, v in extras.items()}


def main():
    if len(sys.argv) != 2:
        print(f"usage: {sys.argv[0]} OUT_DIR", file=sys.stderr)
        return 2
    out_dir = sys.argv[1]
    torch.set_num_threads(1)  # small ops: threads only add noise
    build_cases()

    tensors = []
    metadata = {"torch_version": torch.__version__, "seed": str(SEED), "reference_dtype": "float64"}
    names = []
    for name, fn, inputs, info in CASES:
        names.append(name)
        for i, (t, _) in enumerate(inputs):
            tensors.append((f"{name}.in{i}", t))
        differentiable = any(g for _, g in inputs)
        # The output's shape, to draw R: a float64 dry run (no grad).
        with torch.no_grad():
            probe = fn([t.double() if t.is_floating_point() else t for t, _ in inputs])
        probe = probe[0] if isinstance(probe, tuple) else probe
        R = randn(*probe.shape) if differentiable else None
        out64, grads64, extras64 = run(fn, inputs, torch.float64, R if R is not None else torch.zeros(()))
        out32, grads32, extras32 = run(fn, inputs, torch.float32, R if R is not None else torch.zeros(()))
        if R is not None:
            tensors.append((f"{name}.R", R))
        tensors.append((f"{name}.out", out64 if out64.is_floating_point() else out64.to(torch.uint8)))
        for i, g in grads64.items():
            tensors.append((f"{name}.grad{i}", g))
        for k, v in extras64.items():
            tensors.append((f"{name}.{k}", v))
        # PyTorch's own float32 error against the float64 reference, for the table.
        if out64.is_floating_point():
            fwd = max([rel_l2(out32, out64)] + [rel_l2(extras32[k], v) for k, v in extras64.items()])
            metadata[f"{name}.torch_f32_fwd"] = f"{fwd:.3e}"
        else:
            assert torch.equal(out32, out64), name
        if grads64:
            metadata[f"{name}.torch_f32_grad"] = f"{max(rel_l2(grads32[i], g) for i, g in grads64.items()):.3e}"
        info = dict(info)
        info["inputs"] = [list(t.shape) for t, _ in inputs]
        info["requires_grad"] = [g for _, g in inputs]
        metadata[f"{name}.info"] = json.dumps(info, default=str)
    metadata["cases"] = ",".join(names)

    path = os.path.join(out_dir, "ops.safetensors")
    safetensors_io.write(path, tensors, metadata)
    nbytes = os.path.getsize(path)
    print(f"wrote {path}: {len(names)} cases, {len(tensors)} tensors, {nbytes / 1e6:.2f} MB (torch {torch.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
