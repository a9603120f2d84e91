"""Writes the UNet parity references with PyTorch (run with Debian's /usr/bin/python3):

    torch_unet_reference.py OUT_DIR

For each activation, a small UNet (widths 8,16,32,64) with perturbed BatchNorm parameters and
statistics: its weights as a checkpoint (unet_<act>.safetensors, config in the metadata), an input and
target (io_<act>.safetensors) and the results (ref_<act>.safetensors): eval output, train-mode output,
BCE loss, every parameter gradient and the BatchNorm buffers after the step. Then ten steps each of
Adam, AdamW and SGD with momentum from the relu model (optim_ref.safetensors: the ten losses, in
float32 and float64), and one train step of the default-width UNet at 1x3x64x96 (unet_default*,
with float64 gradients too).
Exits 77 (skipped) when torch is not importable."""
import os
import sys

try:
    import torch
except ImportError as e:
    print(f"skipped: PyTorch is not available to {sys.executable} ({e})")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402
from torch_unet import UNet, config_metadata  # noqa: E402

SMALL = (8, 16, 32, 64)
# The default-width check uses GELU: with ReLU, a handful of the 393,216 pre-activation values of a
# layer sit within 1e-5 of the kink, and whether float32 rounding flips one of them is luck (one flip
# moves every decoder gradient by ~3e-3, in any float32 implementation). The small UNets check ReLU.
DEFAULT_ACT = "gelu"


def perturb_batchnorm(model, gen):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.uniform_(-0.5, 0.5, generator=gen)
                m.running_mean.normal_(0, 0.2, generator=gen)
                m.running_var.uniform_(0.5, 1.5, generator=gen)


def train_step(model, x, t):
    model.train()
    model.zero_grad()
    y = model(x)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(y, t)
    loss.backward()
    return y, loss


def reference(model, x, t):
    out = {}
    model.eval()
    with torch.no_grad():
        out["eval_output"] = model(x)
    y, loss = train_step(model, x, t)
    out["output"] = y.detach()
    out["loss"] = loss.detach()
    for n, p in model.named_parameters():
        out["grad." + n] = p.grad
    for n, b in model.named_buffers():
        out["buffer." + n] = b
    return out


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    gen = torch.Generator().manual_seed(20)
    for i, act in enumerate(["relu", "gelu", "silu", "pysilu"]):
        torch.manual_seed(100 + i)
        model = UNet(3, 1, SMALL, act, False)
        perturb_batchnorm(model, gen)
        # 40x56 is not a multiple of 16: the skips are center-cropped (output 32x48).
        x = torch.randn(2, 3, 40, 56, generator=gen)
        t = (torch.rand(2, 1, 32, 48, generator=gen) > 0.5).float()
        safetensors_io.write(os.path.join(out_dir, f"unet_{act}.safetensors"), model.state_dict(),
                             config_metadata(3, 1, SMALL, act, False))
        safetensors_io.write(os.path.join(out_dir, f"io_{act}.safetensors"), {"input": x, "target": t})
        safetensors_io.write(os.path.join(out_dir, f"ref_{act}.safetensors"), reference(model, x, t))

    # Ten optimizer steps on one batch, from the relu model's checkpoint, in float32 (the reference)
    # and in float64 (how far float32 itself strays: Adam at lr 1e-3 on this batch amplifies rounding
    # to 1.5e-4 in torch's own float32 by step 9, so the learning rates are chosen well-conditioned).
    state, _ = safetensors_io.read(os.path.join(out_dir, "unet_relu.safetensors"))
    io, _ = safetensors_io.read(os.path.join(out_dir, "io_relu.safetensors"))
    losses = {}
    for name in ["adam", "adamw", "sgd"]:
        for dtype, key in [(torch.float32, "losses."), (torch.float64, "losses64.")]:
            model = UNet(3, 1, SMALL, "relu", False)
            model.load_state_dict(state, strict=True)
            model = model.to(dtype)
            opt = {"adam": lambda p: torch.optim.Adam(p, lr=1e-4),
                   "adamw": lambda p: torch.optim.AdamW(p, lr=1e-4, weight_decay=1e-2),
                   "sgd": lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9)}[name](model.parameters())
            values = []
            for _ in range(10):
                _, loss = train_step(model, io["input"].to(dtype), io["target"].to(dtype))
                opt.step()
                values.append(loss.item())
            losses[key + name] = torch.tensor(values, dtype=torch.float64)
    safetensors_io.write(os.path.join(out_dir, "optim_ref.safetensors"), losses)

    # The default-width UNet (31,037,633 parameters), one train step at 1x3x64x96.
    torch.manual_seed(7)
    model = UNet(act=DEFAULT_ACT)
    perturb_batchnorm(model, gen)
    x = torch.randn(1, 3, 64, 96, generator=gen)
    t = (torch.rand(1, 1, 64, 96, generator=gen) > 0.5).float()
    safetensors_io.write(os.path.join(out_dir, "unet_default.safetensors"), model.state_dict(),
                         config_metadata(3, 1, (64, 128, 256, 512), DEFAULT_ACT, False))
    safetensors_io.write(os.path.join(out_dir, "io_default.safetensors"), {"input": x, "target": t})
    y, loss = train_step(model, x, t)
    ref = {"output": y.detach(), "loss": loss.detach()}
    ref.update({"grad." + n: p.grad for n, p in model.named_parameters()})
    ref.update({"buffer." + n: b for n, b in model.named_buffers()})
    # Batch 1 leaves 24 values per channel to the bottleneck's BatchNorm: float32 gradients are then
    # only good to ~6e-3 (torch's own, against float64). The float64 gradients let the test measure
    # the engine against the exact answer instead of against torch's rounding.
    state = {n: v for n, v in safetensors_io.read(os.path.join(out_dir, "unet_default.safetensors"))[0].items()}
    model64 = UNet(act=DEFAULT_ACT).double()
    model64.load_state_dict(state, strict=True)
    train_step(model64, x.double(), t.double())
    ref.update({"grad64." + n: p.grad.float() for n, p in model64.named_parameters()})
    safetensors_io.write(os.path.join(out_dir, "ref_default.safetensors"), ref)
    print(f"wrote UNet references to {out_dir}")


if __name__ == "__main__":
    main()
