"""torch_unet: the PyTorch side of the CPU comparison. Times the same UNet as bench_unet (the module in
tests/torch_unet.py) on the same inputs: forward (eval, no grad) and one train step (forward,
BCE-with-logits, backward, Adam). One JSON line per config with --json, keyed like bench_unet's.

  /usr/bin/python3 bench/torch_unet.py --config 4:160x240:relu --threads 2 [--iters 5] [--warmup 2]
                                       [--mode both|forward|train] [--json]
  /usr/bin/python3 bench/torch_unet.py --gemm --threads 2 [--json]

Peak RSS is per process, so bench/compare_cpu.py runs one config per process. Exits 77 when torch
cannot be imported."""
import argparse
import json
import os
import re
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

GEMM_N = 2048


def parse_config(s):
    """B:HxW:ACT, e.g. 4:160x240:relu -> (4, 160, 240, "relu")."""
    try:
        b, hw, act = s.split(":")
        h, w = hw.split("x")
        return int(b), int(h), int(w), act
    except ValueError:
        raise argparse.ArgumentTypeError(f"--config '{s}': expected B:HxW:ACT, e.g. 4:160x240:relu")


def time_ms(fn, iters, warmup):
    """Runs fn warmup times untimed, then iters times; returns each timed run in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def bench_config(torch, config, args):
    from torch_unet import UNet

    batch, height, width, act = config
    torch.manual_seed(0)
    model = UNet(features=tuple(args.features), act=act)  # widths as bench_unet's --features
    x = torch.randn(batch, 3, height, width)  # (B, 3, H, W)
    # Four floor-halving pools, four doublings, skips cropped to fit: the logits are (B, 1, 16*(H//16), 16*(W//16)).
    target = (torch.rand(batch, 1, 16 * (height // 16), 16 * (width // 16)) > 0.5).float()

    forward_all, train_all = [], []
    if args.mode in ("both", "forward"):
        model.eval()

        def forward():
            with torch.no_grad():
                model(x)

        forward_all = time_ms(forward, args.iters, args.warmup)

    if args.mode in ("both", "train"):
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        loss_fn = torch.nn.BCEWithLogitsLoss()

        def train_step():
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), target)
            loss.backward()
            opt.step()

        train_all = time_ms(train_step, args.iters, args.warmup)

    return {
        "impl": "pytorch",
        "torch_version": torch.__version__,
        "batch": batch,
        "height": height,
        "width": width,
        "activation": act,
        "threads": torch.get_num_threads(),
        "cpu_capability": cpu_capability(torch),
        "forward_ms_median": statistics.median(forward_all) if forward_all else None,
        "train_step_ms_median": statistics.median(train_all) if train_all else None,
        "forward_ms_all": forward_all,
        "train_step_ms_all": train_all,
        "peak_rss_mb": peak_rss_mb(),
    }


def bench_gemm(torch):
    """The machine's ceiling as torch sees it: a 2048^3 float32 matmul, median of 5 after 2 warm-ups."""
    torch.manual_seed(0)
    a = torch.randn(GEMM_N, GEMM_N)
    b = torch.randn(GEMM_N, GEMM_N)
    times = time_ms(lambda: torch.mm(a, b), iters=5, warmup=2)
    return {"impl": "pytorch", "gemm_n": GEMM_N, "gemm_gflops": 2 * GEMM_N**3 / (statistics.median(times) * 1e6),
            "cpu_capability": cpu_capability(torch)}


def cpu_capability(torch):
    """The vector ISA ATen's kernels dispatch to ('AVX512', 'AVX2', ...; ATEN_CPU_CAPABILITY caps it), from
    torch.backends.cpu where it exists, else from the build summary's line (torch 1.13), else None."""
    get = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
    if get:
        return get()
    found = re.search(r"CPU capability usage: (\w+)", torch.__config__.show())
    return found[1] if found else None


def print_text(r):
    if "gemm_gflops" in r:
        print(f"pytorch GEMM {r['gemm_n']}: {r['gemm_gflops']:.1f} GFLOP/s")
        return
    def ms(v):
        return "n/a" if v is None else f"{v:.1f} ms"

    print(f"pytorch {r['torch_version']} {r['batch']}:{r['height']}x{r['width']}:{r['activation']} "
          f"threads={r['threads']}: forward {ms(r['forward_ms_median'])}, "
          f"train step {ms(r['train_step_ms_median'])}, peak RSS {r['peak_rss_mb']:.0f} MB")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=parse_config, action="append", default=[], help="B:HxW:ACT, repeatable")
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--features", type=lambda s: [int(v) for v in s.split(",")], default=[64, 128, 256, 512],
                   help="the UNet's widths, comma-separated (default 64,128,256,512)")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--mode", choices=("both", "forward", "train"), default="both")
    p.add_argument("--json", action="store_true", help="one JSON line per result")
    p.add_argument("--gemm", action="store_true", help=f"time a {GEMM_N}x{GEMM_N} float32 matmul instead")
    args = p.parse_args()
    if not args.gemm and not args.config:
        p.error("give at least one --config, or --gemm")
    if args.iters < 1 or args.warmup < 0 or args.threads < 1:
        p.error("need --iters >= 1, --warmup >= 0, --threads >= 1")

    # The thread pools read these when torch loads; set_num_threads below is the one that counts.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    try:
        import torch
    except ImportError as e:
        print(f"torch_unet.py: cannot import torch ({e}); install python3-torch "
              "(scripts/install_deps.sh) and run with /usr/bin/python3", file=sys.stderr)
        sys.exit(77)
    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)  # the UNet has no inter-op parallelism to use
    except RuntimeError:
        pass  # only allowed before the first parallel work; harmless to skip

    results = [bench_gemm(torch)] if args.gemm else [bench_config(torch, c, args) for c in args.config]
    for r in results:
        if args.json:
            print(json.dumps(r), flush=True)
        else:
            print_text(r)


if __name__ == "__main__":
    main()
