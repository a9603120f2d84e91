"""compare_gpu: the one command of the GPU comparison with PyTorch eager (bench/README.md). Builds
bench_unet_gpu, runs it in strict fp32 and in TF32, runs bench/torch_unet_gpu.py in the same precisions
and in the extra reference variants (channels_last, bf16 autocast), all on the same GPU and shapes,
and prints a Markdown report of ours / torch ratios at equal precision; --log-dir keeps every process's
raw JSON lines and stderr, and the report.

  python3 bench/compare_gpu.py [--build-dir build/release | --ours PATH] [--python PYTHON_WITH_TORCH]
      [--device cuda:0] [--iters 20] [--warmup 5] [--configs 16:160x240:relu,...]
      [--torch-variants fp32,tf32,fp32-cl,bf16] [--profile 16:160x240:relu] [--log-dir DIR] [--out FILE.md]

Exit status: 0 when every process ran every config; 1 when one failed or reported an error; 77 when
torch could not be imported or sees no GPU but our side ran (the report then has our numbers only);
2 for bad flags. Timings mean something only when nothing else runs on the GPU."""
import argparse
import datetime
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # every command runs here; paths are relative to it
EXIT_UNAVAILABLE = 77  # both benchmark programs: no GPU, or no torch
DEFAULT_CONFIGS = ",".join(f"{bhw}:{act}" for bhw in ("16:160x240", "4:320x480")
                           for act in ("relu", "gelu", "silu", "pysilu"))
DEFAULT_VARIANTS = "fp32,tf32,fp32-cl,bf16"
PAIRED = ("fp32", "tf32")  # precisions both sides run: the ratio columns
CONFIG_RE = re.compile(r"^(\d+):(\d+)x(\d+):(relu|gelu|silu|pysilu)$")  # B:HxW:ACT
VARIANT_RE = re.compile(r"^(fp32|tf32|bf16)(-cl)?$")


def log(msg):
    print(f"compare_gpu: {msg}", file=sys.stderr, flush=True)


def fail(msg):
    log(msg)
    sys.exit(1)


def build(build_dir, jobs):
    """Configures the release preset when the build dir is new, then builds bench_unet_gpu only."""
    if not (ROOT / build_dir / "CMakeCache.txt").exists():
        configure = ["cmake", "--preset", "release"]
        if (ROOT / build_dir).resolve() != (ROOT / "build/release").resolve():
            configure += ["-B", str(build_dir)]
        if os.environ.get("TL_DEPS_PREFIX"):  # headers carried in a folder (scripts/pack_deps.sh)
            configure += [f"-DTL_DEPS_PREFIX={os.environ['TL_DEPS_PREFIX']}"]
        run_build_step(configure)
    run_build_step(["cmake", "--build", str(build_dir), "--target", "bench_unet_gpu", "-j", str(jobs)])
    binary = ROOT / build_dir / "bench_unet_gpu"
    if not binary.exists():
        fail(f"{binary} was not built: is the CUDA backend on (TL_CUDA, nvcc on PATH)?")
    return str(binary)


def run_build_step(cmd):
    log("$ " + shlex.join(cmd))
    # Build chatter goes to stderr so that stdout carries only the report.
    if subprocess.run(cmd, cwd=ROOT, stdout=sys.stderr).returncode != 0:
        fail(f"build failed: {shlex.join(cmd)}")


class Runner:
    """Runs the benchmark processes one after another, keeping each one's output in the log dir."""

    def __init__(self, log_dir):
        self.log_dir = log_dir
        self.commands = []  # (name, command line, exit status)

    def run(self, name, cmd):
        """Returns (exit status, stdout). stdout and stderr go to LOG_DIR/name.{out,err} as well."""
        log(f"{name}: $ {shlex.join(cmd)}")
        try:
            p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        except OSError as e:  # no such program: as a shell would say it
            p = subprocess.CompletedProcess(cmd, 127, "", f"{cmd[0]}: {e.strerror}\n")
        self.commands.append((name, shlex.join(cmd), p.returncode))
        if self.log_dir:
            (self.log_dir / f"{name}.out").write_text(p.stdout)
            (self.log_dir / f"{name}.err").write_text(p.stderr)
        if p.returncode != 0:
            tail = p.stderr.strip().splitlines()[-5:]
            log(f"{name}: exit {p.returncode}" + "".join(f"\n    {line}" for line in tail))
        return p.returncode, p.stdout

    def json_lines(self, name, cmd):
        """Runs a --json process; returns (exit status, [results])."""
        rc, out = self.run(name, cmd)
        results = []
        for line in out.splitlines():
            if line.startswith("{"):
                try:
                    results.append(json.loads(line))
                except json.JSONDecodeError as e:
                    log(f"{name}: bad JSON line ({e}): {line[:200]}")
        return rc, results


def gpu_name():
    if shutil.which("nvidia-smi"):
        p = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                           capture_output=True, text=True)
        if p.returncode == 0 and p.stdout.strip():
            return "; ".join(line.strip() for line in p.stdout.strip().splitlines())
    return None


def fmt(v, digits=2):
    return "n/a" if v is None else f"{v:.{digits}f}"


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def table(title, configs, results, variants, key, digits):
    """One Markdown table: a row per config, ours and torch and their ratio per paired precision, then
    torch's extra variants as reference columns. results[(side, variant)][config] is a JSON result."""
    extra = [v for v in variants if v not in PAIRED]
    head = ["config"]
    for p in PAIRED:
        head += [f"ours {p}", f"torch {p}", f"ratio {p}"]
    head += [f"torch {v}" for v in extra]
    out = [f"{title}", "", "| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for c in configs:
        row = [c]
        for p in PAIRED:
            o = results.get(("ours", p), {}).get(c, {}).get(key)
            t = results.get(("torch", p), {}).get(c, {}).get(key)
            row += [fmt(o, digits), fmt(t, digits), fmt(ratio(o, t))]
        row += [fmt(results.get(("torch", v), {}).get(c, {}).get(key), digits) for v in extra]
        out.append("| " + " | ".join(row) + " |")
    return out + [""]


def tflops_table(configs, results, variants):
    """Achieved TFLOP/s of a train step, every side credited with our model's conv FLOP count."""
    cols = [("ours", p) for p in PAIRED] + [("torch", v) for v in variants]
    out = ["Achieved TFLOP/s of a train step (every side credited with the same work, our model's "
           "convolution FLOP count):", "",
           "| config | " + " | ".join(f"{s} {v}" for s, v in cols) + " |", "| --- |" + " ---: |" * len(cols)]
    for c in configs:
        work = next((results[k][c].get("train_step_gflop") for k in results
                     if k[0] == "ours" and c in results[k] and results[k][c].get("train_step_gflop")), None)
        row = [c]
        for k in cols:
            ms = results.get(k, {}).get(c, {}).get("train_step_ms_median")
            row.append(fmt(None if work is None or not ms else work / ms))
        out.append("| " + " | ".join(row) + " |")
    return out + [""]


def goal_lines(configs, results):
    """The issue's goal: a train step no slower than torch at equal precision, with no more memory."""
    out = ["Against the goal (train step ratio <= 1.00 and peak memory <= torch's, at equal precision):", "",
           "| precision | time met | worst time ratio | memory met | worst memory ratio |",
           "| --- | ---: | ---: | ---: | ---: |"]
    for p in PAIRED:
        def ratios(key):
            rs = []
            for c in configs:
                r = ratio(results.get(("ours", p), {}).get(c, {}).get(key),
                          results.get(("torch", p), {}).get(c, {}).get(key))
                if r is not None:
                    rs.append((r, c))
            return rs

        t, m = ratios("train_step_ms_median"), ratios("train_step_peak_mb")

        def met(rs):
            return f"{sum(r <= 1.0 for r, _ in rs)} of {len(rs)}" if rs else "n/a"

        def worst(rs):
            return f"{max(rs)[0]:.2f} ({max(rs)[1]})" if rs else "n/a"

        out.append(f"| {p} | {met(t)} | {worst(t)} | {met(m)} | {worst(m)} |")
    return out + [""]


def report(args, command, configs, variants, results, gemm, errors, runner, profiles, torch_info):
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    gpu = gpu_name() or torch_info.get("device_name") or "GPU name unknown (no nvidia-smi, no torch)"
    out = [
        "# GPU UNet: torchlet against PyTorch eager",
        "",
        f"`{command}`",
        "",
        f"{now}; {gpu}; device {args.device}; torch {torch_info.get('torch_version', 'not run')}; "
        f"median of {args.iters} timed steps after {args.warmup} warm-ups, each step between two CUDA events.",
        "",
        "Ratio = ours / torch at the same precision: below 1 means torchlet is faster or smaller. fp32 is "
        "strict float32 on both sides (torch with `torch.backends.cudnn.allow_tf32` and "
        "`torch.backends.cuda.matmul.allow_tf32` False); tf32 lets both sides' GEMMs and convolutions use "
        "TF32 tensor cores. The other torch columns are references without a counterpart: -cl is "
        "channels_last, bf16 is autocast to bfloat16. A train step is zero_grad, forward, BCE-with-logits, "
        "backward, Adam. Peak memory is the allocator's peak of allocated bytes (ours: blocks rounded to "
        "512 B, or 2 MiB above 1 MiB; torch: `torch.cuda.max_memory_allocated`) from before the first "
        "warm-up step; it includes the weights, the input and, for a train step, the gradients and Adam's "
        "state.",
        "",
    ]
    if torch_info.get("missing"):
        out += [f"**PyTorch was not run**: {torch_info['missing']}. The torch columns are n/a.", ""]
    if gemm:
        out += ["GEMM ceiling (an N^3 matmul of float32 tensors, under autocast for bf16, median of 10): " + ", ".join(
            f"{side} {v} {fmt(r.get('gemm_tflops'))} TFLOP/s (N={r.get('gemm_n')})" for (side, v), r in gemm.items())
            + ".", ""]
    out += table("Train step, median ms:", configs, results, variants, "train_step_ms_median", 2)
    out += table("Forward (eval, no grad), median ms:", configs, results, variants, "forward_ms_median", 2)
    out += table("Peak memory of a train step, MiB:", configs, results, variants, "train_step_peak_mb", 0)
    out += table("Peak memory of a forward, MiB:", configs, results, variants, "forward_peak_mb", 0)
    out += tflops_table(configs, results, variants)
    out += goal_lines(configs, results)
    if errors:
        out += ["Errors (these cells are n/a above):", ""] + [f"- {e}" for e in errors] + [""]
    for name, text in profiles:
        out += [f"Profile, `{name}`:", "", "```", text.rstrip(), "```", ""]
    out += ["Processes run, in order:", ""]
    out += [f"- `{cmd}`" + ("" if rc == 0 else f" (exit {rc})") for _, cmd, rc in runner.commands]
    return "\n".join(out) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build-dir", default="build/release", help="relative to the repository root, or absolute")
    p.add_argument("--ours", help="a built bench_unet_gpu to run as is (no build)")
    p.add_argument("--python", default=shutil.which("python3") or sys.executable,
                   help="the Python with torch (default: python3 on PATH)")
    p.add_argument("--device", default="cuda:0")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--configs", default=DEFAULT_CONFIGS, help="comma-separated B:HxW:ACT")
    p.add_argument("--torch-variants", default=DEFAULT_VARIANTS,
                   help="comma-separated, of fp32, tf32, bf16, each optionally with -cl (channels_last)")
    p.add_argument("--profile", metavar="CONFIG", help="also profile one config by layer kind, both sides, fp32 and tf32")
    p.add_argument("--log-dir", help="write each process's raw output (JSON lines), stderr and report.md here")
    p.add_argument("--out", help="also write the report to this Markdown file")
    args = p.parse_args()
    command = shlex.join([Path(sys.executable).name, "bench/compare_gpu.py"] + sys.argv[1:])

    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    for c in configs + ([args.profile] if args.profile else []):
        if not CONFIG_RE.match(c):
            p.error(f"'{c}' is not B:HxW:ACT with ACT relu, gelu, silu or pysilu, e.g. 16:160x240:relu")
    variants = [v.strip() for v in args.torch_variants.split(",") if v.strip()]
    for v in variants:
        if not VARIANT_RE.match(v):
            p.error(f"--torch-variants: '{v}' is not fp32, tf32 or bf16, optionally with -cl")
    if args.iters < 1 or args.warmup < 0:
        p.error("need --iters >= 1 and --warmup >= 0")
    if not configs:
        p.error("--configs is empty")
    log_dir = Path(args.log_dir).resolve() if args.log_dir else None
    if log_dir:
        log_dir.mkdir(parents=True, exist_ok=True)

    def program(path):  # the processes run in the repository root: a relative path is from here
        return os.path.abspath(path) if os.sep in path else path  # never resolve(): a venv's python is a symlink

    ours_cmd = [program(args.ours)] if args.ours else [build(Path(args.build_dir), os.cpu_count() or 2)]
    torch_cmd = [program(args.python), "bench/torch_unet_gpu.py"]
    common = ["--device", args.device, "--iters", str(args.iters), "--warmup", str(args.warmup)]
    for c in configs:
        common += ["--config", c]

    runner = Runner(log_dir)
    results, gemm, errors = {}, {}, []
    failed, torch_missing = False, False
    torch_info = {}
    profiles = []

    def partial_report():  # after every process: a run killed part way still leaves a report
        if log_dir:
            (log_dir / "report.md").write_text(
                report(args, command, configs, variants, results, gemm, errors, runner, profiles, torch_info))

    def collect(side, variant, rc, lines):
        nonlocal failed
        failed |= rc != 0  # 1: some configs failed, each with an "error" line
        for r in lines:
            if "error" in r:
                errors.append(f"{side} {variant} {r.get('config', 'gemm')}: {r['error']}")
                failed = True
            elif "gemm_tflops" in r:
                gemm[(side, variant)] = r
            else:
                results.setdefault((side, variant), {})[r["config"]] = r
                if side == "torch":
                    torch_info.setdefault("torch_version", r.get("torch_version"))
                    torch_info.setdefault("device_name", r.get("device_name"))
        explained = set(results.get((side, variant), {})) | {r.get("config") for r in lines if "error" in r}
        missing = [c for c in configs if c not in explained]
        if missing:  # it crashed, or printed nothing for them
            errors.append(f"{side} {variant}: no result for {', '.join(missing)} (exit {rc}, see {side}_{variant}.err)")
            failed = True

    # Ours and torch alternately, so that a slow drift of the GPU's clocks hits both sides alike.
    order = [("ours", "fp32"), ("torch", "fp32"), ("ours", "tf32"), ("torch", "tf32")]
    order += [("torch", v) for v in variants if v not in PAIRED]
    for side, variant in order:
        if side == "torch" and (variant not in variants or torch_missing):
            continue
        if side == "ours":
            cmd = ours_cmd + common + ["--json", "--gemm"] + (["--tf32"] if variant == "tf32" else [])
        else:
            gemm_flag = [] if variant.endswith("-cl") else ["--gemm"]  # memory format does not change a GEMM
            cmd = torch_cmd + ["--variant", variant] + common + ["--json"] + gemm_flag
        rc, lines = runner.json_lines(f"{side}_{variant}", cmd)
        if rc == EXIT_UNAVAILABLE:
            if side == "ours":
                fail(f"our benchmark found no usable GPU ({args.device}); see the message above")
            torch_missing = True
            torch_info["missing"] = f"`{args.python}` cannot import torch or sees no GPU"
            log(f"torch is not usable with {args.python}: the report has our numbers only")
            continue
        collect(side, variant, rc, lines)
        partial_report()

    if args.profile:
        for variant in PAIRED:
            cmd = ours_cmd + ["--device", args.device, "--warmup", "2", "--config", args.profile, "--profile"]
            cmd += ["--tf32"] if variant == "tf32" else []
            rc, out = runner.run(f"profile_ours_{variant}", cmd)
            failed |= rc != 0
            profiles.append((shlex.join(cmd), out))
            if not torch_missing:
                cmd = torch_cmd + ["--variant", variant, "--device", args.device, "--warmup", "2", "--config",
                                   args.profile, "--profile"]
                rc, out = runner.run(f"profile_torch_{variant}", cmd)
                failed |= rc != 0
                profiles.append((shlex.join(cmd), out))
            partial_report()

    text = report(args, command, configs, variants, results, gemm, errors, runner, profiles, torch_info)
    print(text, end="")
    for path in ([Path(args.out)] if args.out else []) + ([log_dir / "report.md"] if log_dir else []):
        path.write_text(text)
        log(f"wrote {path}")
    if log_dir:
        raw = {f"{side}_{variant}": list(rs.values()) for (side, variant), rs in results.items()}
        raw["gemm"] = [dict(r, side=side) for (side, _), r in gemm.items()]
        (log_dir / "results.json").write_text(json.dumps(raw, indent=1) + "\n")
    if failed:
        sys.exit(1)
    if torch_missing:
        sys.exit(EXIT_UNAVAILABLE)


if __name__ == "__main__":
    main()
