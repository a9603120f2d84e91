"""compare_cpu: the one command of the CPU comparison with PyTorch (bench/README.md). Builds bench_unet,
measures both sides' GEMM ceilings, then runs each config as its own process (so peak RSS is per
config), ours then torch, and prints a Markdown report; --out also writes it to a file.

  /usr/bin/python3 bench/compare_cpu.py [--threads 2] [--iters 5] [--warmup 2] [--build-dir build/release]
      [--configs 4:160x240:relu,4:160x240:pysilu,1:320x480:relu,1:320x480:pysilu] [--out FILE.md] [--fusion]

Timings mean something only on an otherwise idle machine."""
import argparse
import datetime
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # every command runs here; paths are relative to it
TORCH_PYTHON = "/usr/bin/python3"  # Debian's python3-torch
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


def build(build_dir, jobs):
    """Configures the release preset when the build dir is new, then builds bench_unet only."""
    if not (ROOT / build_dir / "CMakeCache.txt").exists():
        configure = ["cmake", "--preset", "release"]
        if Path(build_dir) != Path("build/release"):
            configure += ["-B", build_dir]
        run_build_step(configure)
    run_build_step(["cmake", "--build", build_dir, "--target", "bench_unet", "-j", str(jobs)])


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
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"nproc {len(os.sched_getaffinity(0))}, {cpu}"


def gflops(gflop, ms):
    return gflop / (ms / 1e3)


def report(args, command, runs, gemm, torch_version, load):
    """The Markdown report. runs: [(config_name, ours, torch, [commands], ours unfused or None)];
    gemm: {"ours": r, "torch": r}."""
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    ceiling = {side: gemm[side]["gemm_gflops"] for side in ("ours", "torch")}
    out = [
        "# CPU UNet: torchlet against PyTorch",
        "",
        f"`{command}`",
        "",
        f"{now}; {machine()}; load average {load:.2f} at start; torch {torch_version}; "
        f"threads {args.threads}; medians of {args.iters} timed iterations after {args.warmup} warm-ups.",
        "",
        "Ratio = ours / torch: below 1 means torchlet is faster. Peak MB is the peak RSS of the process that "
        "ran that config alone (PyTorch's includes the torch library itself).",
        "",
        "| config | ours fwd ms | torch fwd ms | fwd ratio | ours train ms | torch train ms | train ratio "
        "| ours peak MB | torch peak MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, o, t, *_ in runs:
        of, tf = o["forward_ms_median"], t["forward_ms_median"]
        ot, tt = o["train_step_ms_median"], t["train_step_ms_median"]
        out.append(f"| {name} | {of:.1f} | {tf:.1f} | {of / tf:.2f} | {ot:.1f} | {tt:.1f} | {ot / tt:.2f} "
                   f"| {o['peak_rss_mb']:.0f} | {t['peak_rss_mb']:.0f} |")

    n = gemm["ours"]["gemm_n"]
    out += [
        "",
        f"Achieved GFLOP/s, both sides credited with the same work (our model's conv FLOP count); in "
        f"parentheses, the fraction of that side's GEMM ceiling ({n}x{n} float32 matmul, median of 5): "
        f"ours (Eigen) {ceiling['ours']:.1f} GFLOP/s, torch {ceiling['torch']:.1f} GFLOP/s.",
        "",
        "| config | ours fwd GFLOP/s | torch fwd GFLOP/s | ours train GFLOP/s | torch train GFLOP/s |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]

    def cell(gflop, ms, side):
        g = gflops(gflop, ms)
        return f"{g:.1f} ({g / ceiling[side]:.0%})"

    for name, o, t, *_ in runs:
        fwd, train = o["forward_gflop"], o["train_step_gflop"]
        out.append(f"| {name} | {cell(fwd, o['forward_ms_median'], 'ours')} "
                   f"| {cell(fwd, t['forward_ms_median'], 'torch')} "
                   f"| {cell(train, o['train_step_ms_median'], 'ours')} "
                   f"| {cell(train, t['train_step_ms_median'], 'torch')} |")

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


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--build-dir", default="build/release", help="relative to the repository root")
    p.add_argument("--configs", default=DEFAULT_CONFIGS, help="comma-separated B:HxW:ACT")
    p.add_argument("--out", help="also write the report to this Markdown file")
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
    if args.iters < 1 or args.warmup < 0 or args.threads < 1:
        p.error("need --iters >= 1, --warmup >= 0, --threads >= 1")

    load = os.getloadavg()[0]
    if load > 0.5:
        log(f"load average is {load:.2f}: timings are only meaningful on an otherwise idle machine")

    if args.ours_cmd:
        ours_cmd = shlex.split(args.ours_cmd)
    else:
        build(args.build_dir, os.cpu_count())
        ours_cmd = [str(Path(args.build_dir) / "bench_unet")]
    torch_cmd = [TORCH_PYTHON, "bench/torch_unet.py"]
    env = child_env(args.threads)
    threads = ["--threads", str(args.threads)]

    gemm = {"commands": []}
    for side, base in (("ours", ours_cmd), ("torch", torch_cmd)):
        cmd = base + ["--gemm"] + threads + ["--json"]
        gemm[side] = run_json(cmd, f"{side} GEMM", env)
        gemm["commands"].append(shlex.join(cmd))
        if gemm[side].get("gemm_gflops") is None:
            fail(f"{side} GEMM: result lacks gemm_gflops: {json.dumps(gemm[side])}")

    timing = ["forward_ms_median", "train_step_ms_median", "peak_rss_mb"]
    runs = []
    for name, config in configs:
        flags = ["--config", name] + threads + ["--iters", str(args.iters), "--warmup", str(args.warmup), "--json"]
        ours = run_json(ours_cmd + flags, f"ours {name}", env)
        check_result(ours, f"ours {name}", config, args.threads, timing + ["forward_gflop", "train_step_gflop"])
        cmds = [shlex.join(ours_cmd + flags)]
        unfused = None
        if args.fusion:
            unfused = run_json(ours_cmd + flags + ["--no-fuse"], f"ours unfused {name}", env)
            check_result(unfused, f"ours unfused {name}", config, args.threads, timing)
            cmds.append(shlex.join(ours_cmd + flags + ["--no-fuse"]))
        torch = run_json(torch_cmd + flags, f"torch {name}", env)
        check_result(torch, f"torch {name}", config, args.threads, timing)
        runs.append((name, ours, torch, cmds + [shlex.join(torch_cmd + flags)], unfused))

    text = report(args, command, runs, gemm, runs[0][2].get("torch_version", "?"), load)
    print(text, end="")
    if args.out:
        Path(args.out).write_text(text)
        log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
