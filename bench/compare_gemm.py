"""compare_gemm: our GEMM against PyTorch's torch.mm on the same shapes, in the same run (bench/README.md).

  /usr/bin/python3 bench/compare_gemm.py [--threads 2] [--iters 5] [--rounds 3] [--build-dir build/release]
      [--features 16,32,64,128] [--height 160 --width 240] [--torch-python PY ...] [--torch-avx2]
      [--baseline DIR] [--out FILE.md]

bench_gemm (built if needed) gives the machine's measured FMA peak and, per shape (2048^3 and the GEMM of
each 3x3 convolution of the UNet at those widths, as im2col would run it), GFLOP/s of Eigen and of our
GEMM with each micro-kernel this CPU runs. Each --torch-python (default: the latest PyTorch in bench/.venv
when bench/setup_torch_venv.sh made it, and Debian's /usr/bin/python3) times torch.mm on the same shapes,
row-major operands, into a preallocated output; --torch-avx2 adds each PyTorch capped at AVX2 (MKL and
OpenBLAS through their own variables). Every side runs once per round, in alternating order, and the
report keeps each shape's best round: on a shared host the best is the least disturbed. --baseline DIR
runs the bench_gemm of another build directory (an earlier commit's, say) in the same rounds, as columns
of its own.

Timings mean something only on an otherwise idle machine."""
import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from compare_cpu import machine, torch_label  # the same CPU line and PyTorch labels as the step comparison

ROOT = Path(__file__).resolve().parent.parent  # every command runs here; paths are relative to it
VENV_PYTHON = Path("bench/.venv/bin/python")
DEBIAN_PYTHON = "/usr/bin/python3"
TORCH_AVX2_ENV = {"MKL_ENABLE_INSTRUCTIONS": "AVX2", "OPENBLAS_CORETYPE": "Haswell", "ATEN_CPU_CAPABILITY": "avx2"}

# Times torch.mm on the shapes of argv[1] (JSON [[m, n, k], ...]): one JSON line per shape.
TORCH_MM = r"""
import json, sys, time, statistics, torch
shapes, threads, iters = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
g = torch.Generator().manual_seed(0)
for m, n, k in shapes:
    a, b = torch.randn(m, k, generator=g), torch.randn(k, n, generator=g)
    c = torch.empty(m, n)
    torch.mm(a, b, out=c)
    t = []
    for _ in range(iters):
        t0 = time.perf_counter()
        torch.mm(a, b, out=c)
        t.append(time.perf_counter() - t0)
    print(json.dumps({"m": m, "n": n, "k": k, "gflops": 2.0 * m * n * k / statistics.median(t) / 1e9}), flush=True)
"""


def log(msg):
    print(f"compare_gemm: {msg}", file=sys.stderr, flush=True)


def fail(msg):
    log(msg)
    sys.exit(1)


def child_env(threads, extra=None):
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env.update(extra or {})
    return env


def run_lines(cmd, what, env):
    """Runs one process; returns the JSON objects of the lines it printed that start with '{'."""
    log(f"{what}: $ {shlex.join(cmd)}")
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stdout[-4000:] + p.stderr[-4000:])
        fail(f"{what} failed (exit {p.returncode})")
    try:
        rows = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    except json.JSONDecodeError as e:
        fail(f"{what} printed a bad JSON line ({e})")
    if not rows:
        fail(f"{what} printed no JSON line")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--build-dir", default="build/release")
    ap.add_argument("--features", default="16,32,64,128")
    ap.add_argument("--height", type=int, default=160)
    ap.add_argument("--width", type=int, default=240)
    ap.add_argument("--torch-python", action="append", help="a Python with PyTorch (repeatable)")
    ap.add_argument("--torch-avx2", action="store_true", help="also run each PyTorch capped at AVX2")
    ap.add_argument("--baseline", help="another build directory whose bench_gemm runs in the same rounds")
    ap.add_argument("--out", help="also write the report to this file")
    args = ap.parse_args()
    if args.threads < 1 or args.iters < 1 or args.rounds < 1:
        fail("--threads, --iters and --rounds must be at least 1")

    builds = [("ours", args.build_dir)] + ([("baseline", args.baseline)] if args.baseline else [])
    for _, d in builds:
        if not (ROOT / d / "CMakeCache.txt").exists():
            fail(f"{d} is not a configured build directory (cmake --preset release makes build/release)")
        if subprocess.run(["cmake", "--build", d, "--target", "bench_gemm", "-j", "2"], cwd=ROOT, stdout=sys.stderr).returncode:
            fail(f"building bench_gemm in {d} failed")

    pythons = args.torch_python or [str(p) for p in (VENV_PYTHON, Path(DEBIAN_PYTHON)) if (ROOT / p).exists()]
    sides = []  # (label, python, extra env)
    for py in pythons:
        label = torch_label(py)
        if not label:
            fail(f"{py} has no PyTorch (bench/setup_torch_venv.sh makes bench/.venv)")
        sides.append((label, py, {}))
        if args.torch_avx2:
            sides.append((label + " AVX2", py, TORCH_AVX2_ENV))

    def bench_cmd(d):
        return [str(Path(d) / "bench_gemm"), "--threads", str(args.threads), "--iters", str(args.iters),
                "--features", args.features, "--height", str(args.height), "--width", str(args.width), "--json"]
    shapes, peak, best = [], {}, {}  # best[(shape, column)] = GFLOP/s
    isas = []
    started = datetime.datetime.now(datetime.timezone.utc)
    for r in range(args.rounds):
        order = [b[0] for b in builds] + [s[0] for s in sides]
        if r % 2:
            order.reverse()
        for who in order:
            if who in ("ours", "baseline"):
                prefix = "" if who == "ours" else "baseline "
                cmd = bench_cmd(dict(builds)[who])
                for row in run_lines(cmd, f"round {r + 1}, {who}", child_env(args.threads)):
                    if "peak_isa" in row:
                        peak[row["peak_isa"]] = max(peak.get(row["peak_isa"], 0.0), row["peak_gflops"])
                        if row["peak_isa"] not in isas:
                            isas.append(row["peak_isa"])
                        continue
                    key = (row["m"], row["n"], row["k"])
                    if key not in [s[0] for s in shapes]:
                        shapes.append((key, row["shape"]))
                    for col in ["eigen"] + isas:
                        v = row.get(f"{col}_gflops")
                        if v is not None and not (prefix and col == "eigen"):
                            best[(key, prefix + col)] = max(best.get((key, prefix + col), 0.0), v)
                continue
            if not shapes:  # torch needs the shape list, which round 1 takes from bench_gemm first
                fail("internal: torch ran before the shapes were known")
            label, py, extra = next(s for s in sides if s[0] == who)
            cmd = [py, "-c", TORCH_MM, json.dumps([list(s[0]) for s in shapes]), str(args.threads), str(args.iters)]
            for row in run_lines(cmd, f"round {r + 1}, {label}", child_env(args.threads, extra)):
                key = (row["m"], row["n"], row["k"])
                best[(key, label)] = max(best.get((key, label), 0.0), row["gflops"])

    top = max(peak.values())
    cols = ["eigen"] + (["baseline " + i for i in isas] if args.baseline else []) + isas + [s[0] for s in sides]
    out = [f"GEMM, float32, {args.threads} threads: {machine()}; measured FMA peak "
           + ", ".join(f"{i} {peak[i]:.1f} GFLOP/s" for i in isas)
           + f". Best of {args.rounds} rounds (each the median of {args.iters} runs), started "
           + started.strftime("%Y-%m-%d %H:%M UTC") + ". Percentages are of the AVX2 peak for the avx2 and "
           + "AVX2-capped columns, else of the machine's top peak.", ""]
    out.append("| shape | M | N | K | " + " | ".join(cols) + " |")
    out.append("| --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in cols) + " |")
    for key, name in shapes:
        cells = []
        for col in cols:
            v = best.get((key, col))
            ref = peak.get("avx2", top) if col.endswith("avx2") or col.endswith("AVX2") else top
            cells.append("-" if v is None else f"{v:.1f} ({100 * v / ref:.0f}%)")
        out.append(f"| {name} | {key[0]} | {key[1]} | {key[2]} | " + " | ".join(cells) + " |")
    out += ["", "Commands:"] + [f"- {who}: `{shlex.join(bench_cmd(d))}`" for who, d in builds]
    out += [f"- {label}: `{shlex.join([py, '-c', 'TORCH_MM', 'SHAPES', str(args.threads), str(args.iters)])}`"
            + (" under " + " ".join(f"{k}={v}" for k, v in extra.items()) if extra else "")
            + " (TORCH_MM is this script's torch.mm loop, SHAPES the shapes above as JSON)" for label, py, extra in sides]
    text = "\n".join(out) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
