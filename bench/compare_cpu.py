"""compare_cpu: the one command of the CPU comparison with PyTorch (bench/README.md). Builds bench_unet,
measures both sides' GEMM ceilings, then runs each config as its own process (so peak RSS is per
config), ours then torch, and prints a Markdown report; --out also writes it to a file.

  /usr/bin/python3 bench/compare_cpu.py [--threads 2] [--iters 5] [--warmup 2] [--build-dir build/release]
      [--configs 4:160x240:relu,4:160x240:pysilu,1:320x480:relu,1:320x480:pysilu] [--out FILE.md] [--fusion]
      [--features 64,128,256,512] [--torch-python PY ...] [--isa avx512|avx2|reference] [--rounds 1]
      [--torch-isa native|avx2]

Each --torch-python is one PyTorch to compare with (default: Debian's /usr/bin/python3, and the latest
PyTorch in bench/.venv when bench/setup_torch_venv.sh made it). --isa runs our side with that GEMM
micro-kernel (TL_GEMM_ISA). --torch-isa avx2 caps PyTorch at AVX2 too (oneDNN, ATen's kernels, MKL and
OpenBLAS, through their own environment variables), so that an AVX-512 machine measures both sides as an
AVX2 machine would run them; it is the default with --isa avx2. --rounds repeats every process that
many times, interleaved, and reports the median of the rounds' medians.

Timings mean something only on an otherwise idle machine."""
import argparse
import datetime
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # every command runs here; paths are relative to it
TORCH_PYTHON = "/usr/bin/python3"  # Debian's python3-torch
VENV_PYTHON = Path("bench/.venv/bin/python")  # the latest PyTorch (bench/setup_torch_venv.sh), relative to ROOT
DEFAULT_CONFIGS = "4:160x240:relu,4:160x240:pysilu,1:320x480:relu,1:320x480:pysilu"
CONFIG_RE = re.compile(r"^(\d+):(\d+)x(\d+):(\w+)$")  # B:HxW:ACT


def log(msg):
    print(f"compare_cpu: {msg}", file=sys.stderr, flush=True)


def fail(msg):
    log(msg)
    sys.exit(1)


def child_env(threads):
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    return env


# What makes each library PyTorch uses stop at AVX2 on an AVX-512 CPU.
TORCH_AVX2_ENV = {
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN: the convolutions, batch norm, pooling
    "ATEN_CPU_CAPABILITY": "avx2",  # ATen's own vectorized kernels (elementwise, reductions, Adam)
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",  # MKL's GEMM in the PyPI wheels
    "OPENBLAS_CORETYPE": "Haswell",  # OpenBLAS's GEMM in Debian's python3-torch
}


def build(build_dir, jobs):
    """Configures the release preset when the build dir is new, then builds bench_unet only."""
    if not (ROOT / build_dir / "CMakeCache.txt").exists():
        configure = ["cmake", "--preset", "release"]
        if Path(build_dir) != Path("build/release"):
            configure += ["-B", build_dir]
        run_build_step(configure)
    run_build_step(["cmake", "--build", build_dir, "--target", "bench_unet", "bench_gemm", "-j", str(jobs)])


def run_build_step(cmd):
    log("$ " + shlex.join(cmd))
    # Build chatter goes to stderr so that stdout carries only the report.
    if subprocess.run(cmd, cwd=ROOT, stdout=sys.stderr).returncode != 0:
        fail(f"build failed: {shlex.join(cmd)}")


def run_json(cmd, what, env):
    """Runs one benchmark process and returns the last JSON line it printed."""
    log(f"{what}: $ {shlex.join(cmd)}")
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stdout[-4000:] + p.stderr)
        fail(f"{what} failed (exit {p.returncode}): {shlex.join(cmd)}")
    lines = [line for line in p.stdout.splitlines() if line.startswith("{")]
    if not lines:
        sys.stderr.write(p.stdout[-4000:] + p.stderr)
        fail(f"{what} printed no JSON line: {shlex.join(cmd)}")
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError as e:
        fail(f"{what} printed bad JSON ({e}): {lines[-1]}")


def check_result(r, what, config, threads, keys):
    """A result for the wrong config or thread count would make the comparison silently wrong."""
    missing = [k for k in keys if r.get(k) is None]
    if missing:
        fail(f"{what}: result lacks {', '.join(missing)}: {json.dumps(r)}")
    b, h, w, act = config
    got = (r["batch"], r["height"], r["width"], r["activation"], r["threads"])
    if got != (b, h, w, act, threads):
        fail(f"{what}: result is for {got}, expected {(b, h, w, act, threads)}")


def machine():
    cpu, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu == "unknown CPU":
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    isa = "AVX-512" if "avx512f" in flags else "AVX2 + FMA" if {"avx2", "fma"} <= flags else "no AVX2"
    return f"nproc {len(os.sched_getaffinity(0))}, {cpu}, {isa}"


def gflops(gflop, ms):
    return gflop / (ms / 1e3)


def report(args, command, runs, gemm, torches, load, peak):
    """The Markdown report. runs: [(config_name, ours, [torch result per torch], [commands], ours unfused
    or None)]; gemm: {"ours": r, torch label: r}; torches: the torch labels; peak: measured FMA peaks."""
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    # What each PyTorch reported its kernels dispatch to, so a cap that did not take shows in the report.
    seen = ", ".join(f"{t} {gemm[t].get('cpu_capability') or 'unknown'}" for t in torches)
    torch_isa = f"{args.torch_isa} (ATen reports {seen})"
    ceiling = {side: gemm[side]["gemm_gflops"] for side in ["ours"] + torches}
    peaks = ", ".join(f"{k} {v:.0f}" for k, v in peak.items()) or "not measured"
    out = [
        "# CPU UNet: torchlet against PyTorch",
        "",
        f"`{command}`",
        "",
        f"{now}; {machine()}; load average {load:.2f} at start; our GEMM micro-kernel {args.isa or 'auto'}; "
        f"PyTorch's ISA {torch_isa}; "
        f"UNet widths {args.features}; threads {args.threads}; medians of {args.iters} timed iterations after "
        f"{args.warmup} warm-ups" + (f", median of {args.rounds} interleaved rounds" if args.rounds > 1 else "") + ".",
        "",
        f"Measured FMA peak (GFLOP/s, {args.threads} threads, the higher of the run's start and end): {peaks}. "
        "GEMM ceilings (2048^3 float32): "
        + ", ".join(f"{side} {ceiling[side]:.0f}" for side in ["ours"] + torches) + " GFLOP/s.",
        "",
        "Ratio = ours / torch: below 1 means torchlet is faster. Peak MB is the peak RSS of the process that "
        "ran that config alone (PyTorch's includes the torch library itself).",
        "",
    ]
    head = "| config | ours train ms | " + " | ".join(f"{t} train ms | ratio" for t in torches)
    head += " | ours fwd ms | " + " | ".join(f"{t} fwd ms | ratio" for t in torches)
    head += " | ours peak MB | " + " | ".join(f"{t} peak MB" for t in torches) + " |"
    ncols = 1 + 3 * (1 + 2 * len(torches)) - len(torches)
    out += [head, "| --- |" + " ---: |" * (ncols - 1)]
    for name, o, ts, *_ in runs:
        row = [name, f"{o['train_step_ms_median']:.1f}"]
        for t in ts:
            row += [f"{t['train_step_ms_median']:.1f}", f"{o['train_step_ms_median'] / t['train_step_ms_median']:.2f}"]
        row.append(f"{o['forward_ms_median']:.1f}")
        for t in ts:
            row += [f"{t['forward_ms_median']:.1f}", f"{o['forward_ms_median'] / t['forward_ms_median']:.2f}"]
        row.append(f"{o['peak_rss_mb']:.0f}")
        row += [f"{t['peak_rss_mb']:.0f}" for t in ts]
        out.append("| " + " | ".join(row) + " |")

    out += [
        "",
        "Achieved GFLOP/s, every side credited with the same work (our model's conv FLOP count); in "
        "parentheses the fraction of the measured FMA peak of " + (f"{args.isa}'s vectors." if args.isa in peak
                                                                   else "the widest vectors this CPU has."),
        "",
        "| config | ours fwd | " + " | ".join(f"{t} fwd" for t in torches) + " | ours train | "
        + " | ".join(f"{t} train" for t in torches) + " |",
        "| --- |" + " ---: |" * (2 + 2 * len(torches)),
    ]
    top = peak.get(args.isa) or (max(peak.values()) if peak else None)

    def cell(gflop, ms):
        g = gflops(gflop, ms)
        return f"{g:.1f}" + (f" ({g / top:.0%})" if top else "")

    for name, o, ts, *_ in runs:
        fwd, train = o["forward_gflop"], o["train_step_gflop"]
        out.append(f"| {name} | {cell(fwd, o['forward_ms_median'])} | "
                   + " | ".join(cell(fwd, t["forward_ms_median"]) for t in ts)
                   + f" | {cell(train, o['train_step_ms_median'])} | "
                   + " | ".join(cell(train, t["train_step_ms_median"]) for t in ts) + " |")

    unfused = [(name, o, u) for name, o, _, _, u in runs if u]
    if unfused:
        out += [
            "",
            "Batch norm fused with its activation (ours as above) against ours with `--no-fuse` (batch norm "
            "and activation as two ops), run right after it:",
            "",
            "| config | fused train ms | unfused train ms | train ratio | fused fwd ms | unfused fwd ms "
            "| fused peak MB | unfused peak MB |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, o, u in unfused:
            ot, ut = o["train_step_ms_median"], u["train_step_ms_median"]
            out.append(f"| {name} | {ot:.1f} | {ut:.1f} | {ot / ut:.2f} | {o['forward_ms_median']:.1f} "
                       f"| {u['forward_ms_median']:.1f} | {o['peak_rss_mb']:.0f} | {u['peak_rss_mb']:.0f} |")

    out += ["", "Work per step: " + "; ".join(
        f"{name} {o['forward_gflop']:.1f} GFLOP forward, {o['train_step_gflop']:.1f} GFLOP train step"
        for name, o, *_ in runs) + "."]
    out += ["", "Processes run, in order:", ""]
    out += [f"- `{c}`" for c in gemm["commands"]]
    out += [f"- `{c}`" for _, _, _, cmds, _ in runs for c in cmds]
    return "\n".join(out) + "\n"


def combine(results):
    """One result from several rounds of the same config: the median of each timing, the max peak RSS."""
    if len(results) == 1:
        return results[0]
    r = dict(results[-1])
    for key in ("forward_ms_median", "train_step_ms_median"):
        vals = [x[key] for x in results if x.get(key) is not None]
        r[key] = statistics.median(vals) if vals else None
    r["peak_rss_mb"] = max(x["peak_rss_mb"] for x in results)
    return r


def torch_label(python):
    """'torch 2.15.0' for the PyTorch a Python has, or None when it has none."""
    p = subprocess.run([python, "-c", "import torch; print(torch.__version__.split('+')[0])"],
                       capture_output=True, text=True)
    return f"torch {p.stdout.strip()}" if p.returncode == 0 and p.stdout.strip() else None


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--build-dir", default="build/release", help="relative to the repository root")
    p.add_argument("--configs", default=DEFAULT_CONFIGS, help="comma-separated B:HxW:ACT")
    p.add_argument("--out", help="also write the report to this Markdown file")
    p.add_argument("--features", default="64,128,256,512", help="the UNet's widths, for both sides")
    p.add_argument("--torch-python", action="append", default=None,
                   help="a Python with the PyTorch to compare with; repeatable")
    p.add_argument("--isa", choices=("avx512", "avx2", "reference"), help="our GEMM micro-kernel (TL_GEMM_ISA)")
    p.add_argument("--torch-isa", choices=("native", "avx2"),
                   help="cap PyTorch's libraries at AVX2 (default: avx2 with --isa avx2, else native)")
    p.add_argument("--rounds", type=int, default=1, help="interleaved repetitions of every process")
    p.add_argument("--fusion", action="store_true",
                   help="also run ours with --no-fuse after each config, for the batch-norm fusion table")
    # Testing the driver without the binary: a command standing in for bench_unet (no build then).
    p.add_argument("--ours-cmd", help=argparse.SUPPRESS)
    args = p.parse_args()
    command = shlex.join([sys.executable] + sys.argv)

    configs = []
    for name in args.configs.split(","):
        m = CONFIG_RE.match(name.strip())
        if not m:
            p.error(f"--configs: '{name}' is not B:HxW:ACT, e.g. 4:160x240:relu")
        configs.append((name.strip(), (int(m[1]), int(m[2]), int(m[3]), m[4])))
    if args.torch_isa is None:
        args.torch_isa = "avx2" if args.isa == "avx2" else "native"
    if args.iters < 1 or args.warmup < 0 or args.threads < 1 or args.rounds < 1:
        p.error("need --iters >= 1, --warmup >= 0, --threads >= 1, --rounds >= 1")

    load = os.getloadavg()[0]
    if load > 0.5:
        log(f"load average is {load:.2f}: timings are only meaningful on an otherwise idle machine")

    if args.ours_cmd:
        ours_cmd = shlex.split(args.ours_cmd)
    else:
        build(args.build_dir, os.cpu_count())
        ours_cmd = [str(Path(args.build_dir) / "bench_unet")]
    pythons = args.torch_python or [TORCH_PYTHON] + ([str(VENV_PYTHON)] if (ROOT / VENV_PYTHON).exists() else [])
    torches = []  # (label, command)
    for py in pythons:
        label = torch_label(py)
        if label is None:
            log(f"{py} has no torch: left out")
            continue
        if any(label == t for t, _ in torches):
            label += f" ({py})"
        torches.append((label, [py, "bench/torch_unet.py"]))
    if not torches:
        fail("no Python with torch: install python3-torch or run bench/setup_torch_venv.sh")
    env = child_env(args.threads)
    ours_env = dict(env)
    if args.isa:
        ours_env["TL_GEMM_ISA"] = args.isa
    torch_env = dict(env, **(TORCH_AVX2_ENV if args.torch_isa == "avx2" else {}))
    threads = ["--threads", str(args.threads)]
    features = ["--features", args.features]

    def shown(cmd, e):
        """The command as the report lists it: with the variables it ran under beyond the thread counts."""
        return " ".join([f"{k}={v}" for k, v in e.items() if env.get(k) != v] + [shlex.join(cmd)])

    gemm = {"commands": []}
    for side, base, e in [("ours", ours_cmd, ours_env)] + [(t, c, torch_env) for t, c in torches]:
        cmd = base + ["--gemm"] + threads + ["--json"]
        gemm[side] = run_json(cmd, f"{side} GEMM", e)
        gemm["commands"].append(shown(cmd, e))
        if gemm[side].get("gemm_gflops") is None:
            fail(f"{side} GEMM: result lacks gemm_gflops: {json.dumps(gemm[side])}")
    # The FMA peak is measured before the configs and again after them, and the higher kept: a peak
    # taken in a slow phase of a shared host would make every fraction of it too high.
    peak = {}
    peak_bin = Path(ours_cmd[0]).parent / "bench_gemm"

    def measure_peak():
        if args.ours_cmd or not (ROOT / peak_bin).exists():
            return
        p = subprocess.run([str(peak_bin), "--threads", str(args.threads), "--peak-only", "--json"], cwd=ROOT,
                           env=env, capture_output=True, text=True)
        for line in p.stdout.splitlines():
            if line.startswith("{") and "peak_gflops" in line:
                r = json.loads(line)
                peak[r["peak_isa"]] = max(peak.get(r["peak_isa"], 0.0), r["peak_gflops"])

    measure_peak()

    timing = ["forward_ms_median", "train_step_ms_median", "peak_rss_mb"]
    results = {name: {"ours": [], "unfused": [], "torch": [[] for _ in torches], "cmds": []} for name, _ in configs}
    for _ in range(args.rounds):
        for name, config in configs:
            flags = (["--config", name] + threads + features +
                     ["--iters", str(args.iters), "--warmup", str(args.warmup), "--json"])
            res = results[name]
            ours = run_json(ours_cmd + flags, f"ours {name}", ours_env)
            check_result(ours, f"ours {name}", config, args.threads, timing + ["forward_gflop", "train_step_gflop"])
            res["ours"].append(ours)
            res["cmds"].append(shown(ours_cmd + flags, ours_env))
            if args.fusion:
                unfused = run_json(ours_cmd + flags + ["--no-fuse"], f"ours unfused {name}", ours_env)
                check_result(unfused, f"ours unfused {name}", config, args.threads, timing)
                res["unfused"].append(unfused)
                res["cmds"].append(shown(ours_cmd + flags + ["--no-fuse"], ours_env))
            for i, (label, cmd) in enumerate(torches):
                t = run_json(cmd + flags, f"{label} {name}", torch_env)
                check_result(t, f"{label} {name}", config, args.threads, timing)
                res["torch"][i].append(t)
                res["cmds"].append(shown(cmd + flags, torch_env))
    measure_peak()
    runs = []
    for name, _ in configs:
        res = results[name]
        runs.append((name, combine(res["ours"]), [combine(t) for t in res["torch"]], res["cmds"],
                     combine(res["unfused"]) if res["unfused"] else None))

    text = report(args, command, runs, gemm, [t for t, _ in torches], load, peak)
    print(text, end="")
    if args.out:
        Path(args.out).write_text(text)
        log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
