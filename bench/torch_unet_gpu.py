"""torch_unet_gpu: the PyTorch side of the GPU comparison. Times the same UNet as bench_unet_gpu (the
module in tests/torch_unet.py), eager, on the same shapes: forward (eval, no grad) and one train step
(forward, BCE-with-logits, backward, Adam), each step between two CUDA events, median and min of --iters
steps after --warmup untimed ones, and torch.cuda.max_memory_allocated. One JSON line per config with
--json, keyed like bench_unet_gpu's.

  /usr/bin/python3 bench/torch_unet_gpu.py --variant fp32 [--config 16:160x240:relu ...] [--iters 20]
      [--warmup 5] [--mode both|forward|train] [--device cuda:0] [--json] [--gemm] [--profile]

Variants (--variant): fp32 (strict: torch.backends.cudnn.allow_tf32 and
torch.backends.cuda.matmul.allow_tf32 both False), tf32 (both True), bf16 (autocast to bfloat16, the
parameters and Adam in float32); a "-cl" suffix (fp32-cl, tf32-cl, bf16-cl) also puts the model and
input in channels_last. cudnn.benchmark stays off (PyTorch's default) unless --cudnn-benchmark.

--device cpu is a smoke test of this script (host timers, no memory numbers); --profile prints
torch.profiler's table of one step instead of timing. Exits 77 without torch or without a GPU."""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

EXIT_UNAVAILABLE = 77
GEMM_N = 8192
DEFAULT_CONFIGS = [f"{bhw}:{act}" for bhw in ("16:160x240", "4:320x480") for act in ("relu", "gelu", "silu", "pysilu")]
VARIANTS = ("fp32", "tf32", "bf16", "fp32-cl", "tf32-cl", "bf16-cl")


def parse_config(s):
    """B:HxW:ACT, e.g. 16:160x240:relu -> (16, 160, 240, "relu")."""
    try:
        b, hw, act = s.split(":")
        h, w = hw.split("x")
        b, h, w = int(b), int(h), int(w)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--config '{s}': expected B:HxW:ACT, e.g. 16:160x240:relu")
    if b < 1 or h < 16 or w < 16 or act not in ("relu", "gelu", "silu", "pysilu"):
        raise argparse.ArgumentTypeError(f"--config '{s}': need B >= 1, sides >= 16, ACT relu|gelu|silu|pysilu")
    return b, h, w, act


class Timer:
    """Milliseconds between start() and stop(): CUDA events on the current stream, or the host clock on cpu."""

    def __init__(self, torch, device):
        self.torch, self.cuda = torch, device.type == "cuda"
        if self.cuda:
            self.begin = torch.cuda.Event(enable_timing=True)
            self.end = torch.cuda.Event(enable_timing=True)

    def start(self):
        if self.cuda:
            self.begin.record()
        else:
            self.t0 = time.perf_counter()

    def stop(self):
        if self.cuda:
            self.end.record()
            self.end.synchronize()  # each step starts on an idle GPU, as in bench_unet_gpu
            return self.begin.elapsed_time(self.end)
        return (time.perf_counter() - self.t0) * 1e3


def time_steps(timer, fn, iters, warmup):
    times = []
    for i in range(warmup + iters):
        timer.start()
        fn()
        ms = timer.stop()
        if i >= warmup:
            times.append(ms)
    return times


def set_precision(torch, variant):
    tf32 = variant.startswith("tf32")
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32


def autocast(torch, variant, device):
    """bf16 autocast for the bf16 variants, a no-op context otherwise."""
    import contextlib
    if variant.startswith("bf16"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def peak_mb(torch, device):
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def reset_peak(torch, device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def build(torch, config, variant, device):
    from torch_unet import UNet

    batch, height, width, act = config
    torch.manual_seed(0)
    model = UNet(act=act).to(device)  # default widths 64,128,256,512, as bench_unet_gpu
    x = torch.randn(batch, 3, height, width, device=device)  # (B, 3, H, W)
    # Four floor-halving pools, four doublings, skips cropped to fit: the logits are (B, 1, 16*(H//16), 16*(W//16)).
    target = (torch.rand(batch, 1, 16 * (height // 16), 16 * (width // 16), device=device) > 0.5).float()
    if variant.endswith("-cl"):
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    return model, x, target


def bench_config(torch, config, args, device):
    batch, height, width, act = config
    model, x, target = build(torch, config, args.variant, device)
    timer = Timer(torch, device)
    result = {
        "impl": "pytorch", "torch_version": torch.__version__, "device": str(device), "precision": args.variant,
        "config": f"{batch}:{height}x{width}:{act}", "batch": batch, "height": height, "width": width,
        "activation": act, "iters": args.iters, "warmup": args.warmup, "cudnn_benchmark": args.cudnn_benchmark,
    }
    if device.type == "cuda":
        result["device_name"] = torch.cuda.get_device_name(device)

    if args.mode in ("both", "forward"):
        model.eval()

        def forward():
            with torch.no_grad(), autocast(torch, args.variant, device):
                model(x)

        reset_peak(torch, device)
        times = time_steps(timer, forward, args.iters, args.warmup)
        result.update(forward_ms_median=statistics.median(times), forward_ms_min=min(times), forward_ms_all=times,
                      forward_peak_mb=peak_mb(torch, device))

    if args.mode in ("both", "train"):
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        loss_fn = torch.nn.BCEWithLogitsLoss()

        def train_step():
            opt.zero_grad(set_to_none=True)
            with autocast(torch, args.variant, device):
                loss = loss_fn(model(x), target)
            loss.backward()
            opt.step()

        reset_peak(torch, device)  # the peak includes Adam's state, made at the first step
        times = time_steps(timer, train_step, args.iters, args.warmup)
        result.update(train_step_ms_median=statistics.median(times), train_step_ms_min=min(times),
                      train_step_ms_all=times, train_step_peak_mb=peak_mb(torch, device))
    return result


def profile_config(torch, config, args, device):
    """torch.profiler's table of one forward and one train step after the warm-up, by op, sorted by device time."""
    from torch.profiler import ProfilerActivity, profile

    model, x, target = build(torch, config, args.variant, device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    model.train()

    def train_step():
        opt.zero_grad(set_to_none=True)
        with autocast(torch, args.variant, device):
            loss = loss_fn(model(x), target)
        loss.backward()
        opt.step()

    def forward():
        with torch.no_grad(), autocast(torch, args.variant, device):
            model(x)

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    for what, fn, train in (("forward (eval, no grad)", forward, False), ("train step", train_step, True)):
        model.train(train)
        for _ in range(max(args.warmup, 1)):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        with profile(activities=activities) as prof:
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        print(f"\ntorch.profiler, one {what}, {config[0]}:{config[1]}x{config[2]}:{config[3]}, {args.variant}, "
              f"{device}:")
        averages = prof.key_averages()
        sort = "self_cpu_time_total"
        if device.type == "cuda":  # torch 2.4 renamed the cuda_* columns device_*
            sort = "self_device_time_total" if averages and hasattr(averages[0], "self_device_time_total") \
                else "self_cuda_time_total"
        print(averages.table(sort_by=sort, row_limit=20))


def bench_gemm(torch, args, device):
    """The device's ceiling as torch sees it at this precision: an N^3 matmul of float32 tensors (under
    autocast for bf16), median of 10 after 2."""
    torch.manual_seed(0)
    n = GEMM_N if device.type == "cuda" else 512
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)

    def mm():
        with autocast(torch, args.variant, device):
            torch.mm(a, b)

    times = time_steps(Timer(torch, device), mm, iters=10, warmup=2)
    return {"impl": "pytorch", "torch_version": torch.__version__, "device": str(device), "precision": args.variant,
            "gemm_n": n, "gemm_tflops": 2 * n**3 / (statistics.median(times) * 1e9)}


def print_text(r):
    if "gemm_tflops" in r:
        print(f"pytorch GEMM {r['gemm_n']}^3 {r['precision']} on {r['device']}: {r['gemm_tflops']:.2f} TFLOP/s")
        return

    def cell(key):
        ms, mb = r.get(f"{key}_ms_median"), r.get(f"{key}_peak_mb")
        return "n/a" if ms is None else f"{ms:.2f} ms" + ("" if mb is None else f" (peak {mb:.0f} MiB)")

    print(f"pytorch {r['torch_version']} {r['config']} {r['precision']} {r['device']}: forward {cell('forward')}, "
          f"train step {cell('train_step')}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", choices=VARIANTS, default="fp32")
    p.add_argument("--config", type=parse_config, action="append", default=[],
                   help="B:HxW:ACT, repeatable (default: 16:160x240 and 4:320x480 with each activation)")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--mode", choices=("both", "forward", "train"), default="both")
    p.add_argument("--device", default="cuda:0", help="cuda[:N], or cpu for a smoke test of this script")
    p.add_argument("--cudnn-benchmark", action="store_true", help="let cuDNN autotune (off in eager by default)")
    p.add_argument("--json", action="store_true", help="one JSON line per result")
    p.add_argument("--gemm", action="store_true", help=f"also time a {GEMM_N}^3 float32 matmul first")
    p.add_argument("--profile", action="store_true", help="torch.profiler tables of one step instead of timing")
    args = p.parse_args()
    if args.iters < 1 or args.warmup < 0:
        p.error("need --iters >= 1 and --warmup >= 0")
    if args.profile and args.json:
        p.error("--profile prints tables, not JSON: drop --json")
    configs = args.config or [parse_config(s) for s in DEFAULT_CONFIGS]

    try:
        import torch
    except ImportError as e:
        print(f"torch_unet_gpu.py: cannot import torch ({e}); run with a Python that has torch",
              file=sys.stderr)
        sys.exit(EXIT_UNAVAILABLE)
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            print(f"torch_unet_gpu.py: torch {torch.__version__} sees no CUDA device; this benchmark needs a GPU",
                  file=sys.stderr)
            sys.exit(EXIT_UNAVAILABLE)
        if device.index is None:
            device = torch.device("cuda", 0)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        p.error(f"--device must be cuda[:N] or cpu, got {args.device}")
    set_precision(torch, args.variant)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark

    failed = 0
    results = []
    if args.gemm:
        results.append(lambda: bench_gemm(torch, args, device))
    for c in configs:
        if args.profile:
            results.append(lambda c=c: profile_config(torch, c, args, device))
        else:
            results.append(lambda c=c: bench_config(torch, c, args, device))
    for i, run in enumerate(results):
        # A failed config (out of memory, say) is reported and the next one still runs.
        try:
            r = run()
        except RuntimeError as e:
            failed += 1
            what = "gemm" if args.gemm and i == 0 else "config"
            print(f"torch_unet_gpu.py: {what} failed: {e}", file=sys.stderr)
            r = {"impl": "pytorch", "torch_version": torch.__version__, "device": str(device),
                 "precision": args.variant, "error": str(e).splitlines()[0] if str(e) else type(e).__name__}
            if what == "config":
                b, h, w, act = configs[i - (1 if args.gemm else 0)]
                r.update(config=f"{b}:{h}x{w}:{act}", batch=b, height=h, width=w, activation=act)
            else:
                r["gemm_n"] = GEMM_N
        if r is not None:
            if args.json:
                print(json.dumps(r), flush=True)
            elif "error" not in r:
                print_text(r)
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the next config's shapes share nothing with this one's
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
