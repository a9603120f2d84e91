"""train_unet under mpirun, end to end, on a tiny synthetic run (seconds each):

    dist_train.py MPIRUN TRAIN_UNET WORKDIR

  equivalence  2 ranks x batch 2 with --sync-bn against 1 process x batch 4: the same metrics.csv
               (to 1e-5, the file's 6 decimals) and the same weights (max abs error / max |weight| per
               tensor within 2e-5: float32 summation order only), and the 2-rank folder holds what the
               1-process folder holds, its log lines once (rank 0 alone writes)
  resume       a 2-rank run stopped by --max-steps inside an epoch and resumed with 2 ranks ends
               bit-identical to the uninterrupted 2-rank run; resuming it as one process is refused
               with one clear line
  failure      one rank failing (rank 1 refuses every image: --max-pixels 1 for it alone) stops both
               within seconds with rank 1's message naming the file, and a corrupt image fails both
Exit 0 when all pass, 1 otherwise; prints the measured errors.
"""

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
from array import array

MPIRUN, TRAIN, WORK = sys.argv[1], sys.argv[2], sys.argv[3]
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
COMMON = ["--synthetic-count", "32", "--image-size", "32x48", "--features", "4,8", "--epochs", "2",
          "--threads", "1", "--workers", "1", "--quiet"]
failures = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what, flush=True)
    if not ok:
        failures.append(what)


def run(cmd, timeout=120):
    t0 = time.monotonic()
    p = subprocess.run(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr, time.monotonic() - t0


def mpi(np_, *args):
    return [MPIRUN, "--oversubscribe", "-np", str(np_), TRAIN, *args]


def read_safetensors(path):  # float32 tensors only: name -> array('f')
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, h in header.items():
        if name == "__metadata__" or h["dtype"] != "F32":
            continue
        a = array("f")
        a.frombytes(data[h["data_offsets"][0]:h["data_offsets"][1]])
        out[name] = a
    return out


def metrics(folder):
    with open(os.path.join(folder, "metrics.csv")) as f:
        rows = [line.strip().split(",") for line in f][1:]
    return [[float(v) for v in r[:-1]] for r in rows]  # the last column is seconds


def folder(name):
    path = os.path.join(WORK, name)
    shutil.rmtree(path, ignore_errors=True)
    return path


def expect_ok(label, result):
    rc, out, err, sec = result
    check(rc == 0, f"{label}: exit status 0 ({sec:.1f} s)")
    if rc != 0:
        print(out[-2000:], err[-2000:])
    return out


os.makedirs(WORK, exist_ok=True)

# ---- equivalence -------------------------------------------------------------------------------
one, two = folder("one"), folder("two")
expect_ok("1 process x batch 4", run([TRAIN, *COMMON, "--batch-size", "4", "--out", one]))
out2 = expect_ok("2 ranks x batch 2 --sync-bn", run(mpi(2, *COMMON, "--batch-size", "2", "--sync-bn", "--out", two)))
check("2 ranks (mpi) x batch 2 = global batch 4, synchronized batch norm" in out2, "the log states the global batch")
m1, m2 = metrics(one), metrics(two)
worst_m = max(abs(a - b) for r1, r2 in zip(m1, m2) for a, b in zip(r1, r2)) if len(m1) == len(m2) else float("inf")
print(f"      metrics.csv: worst abs difference {worst_m:.2e} (tolerance 1e-5)")
check(len(m1) == len(m2) == 2 and worst_m <= 1e-5, "metrics.csv rows agree")
w1, w2 = read_safetensors(os.path.join(one, "last.safetensors")), read_safetensors(os.path.join(two, "last.safetensors"))
worst_w, where = 0.0, ""
for name, a in w1.items():
    b = w2[name]
    scale = max(max(abs(v) for v in a), 1e-30)
    e = max(abs(x - y) for x, y in zip(a, b)) / scale
    if e > worst_w:
        worst_w, where = e, name
print(f"      weights after {2 * 6} Adam steps: worst relative error {worst_w:.2e} in {where} (tolerance 2e-5)")
check(set(w1) == set(w2) and worst_w <= 2e-5, "weights agree")
check(sorted(os.listdir(one)) == sorted(os.listdir(two)), f"same files in both run folders: {sorted(os.listdir(two))}")
with open(os.path.join(two, "log.txt")) as f:
    log = f.read()
check(log.count("epoch 1/2 ") == 1 and log.count("model: UNet") == 1, "log.txt has each line once")
check(out2.count("epoch 1/2 ") == 1, "the console shows each epoch line once")

# ---- resume ------------------------------------------------------------------------------------
part = folder("part")
run_args = [*COMMON, "--batch-size", "2", "--sync-bn"]
rc, out, err, _ = run(mpi(2, *run_args, "--max-steps", "4", "--out", part))
check(rc == 0 and "reached --max-steps" in out, "2-rank run stopped by --max-steps inside epoch 1")
rc, out, err, _ = run([TRAIN, "--resume", os.path.join(part, "last.safetensors")])
lines = err.strip().splitlines()
print("      one process resuming it: " + (lines[-1] if lines else "(nothing on stderr)"))
check(rc != 0 and len(lines) == 1 and "2 process(es)" in lines[0] and "mpirun -np 2" in lines[0],
      "resuming a 2-rank run as one process is one clear error")
expect_ok("2-rank resume", run(mpi(2, "--resume", os.path.join(part, "last.safetensors"), "--quiet")))
a, b = read_safetensors(os.path.join(part, "last.safetensors")), w2
same = set(a) == set(b) and all(a[k].tobytes() == b[k].tobytes() for k in a)
check(same and metrics(part) == m2, "the resumed 2-rank run is bit-identical to the uninterrupted one")

# ---- failure on one rank -------------------------------------------------------------------------
bad = folder("bad")
cmd = [MPIRUN, "--oversubscribe", "-np", "1", TRAIN, *COMMON, "--batch-size", "2", "--out", bad, ":",
       "-np", "1", TRAIN, *COMMON, "--batch-size", "2", "--out", bad, "--max-pixels", "1"]
rc, out, err, sec = run(cmd, timeout=60)
msg = [l for l in err.splitlines() if l.startswith("train_unet: rank 1:")]
print(f"      after {sec:.1f} s, exit status {rc}: " + (msg[0] if msg else "(no rank 1 message)"))
check(rc != 0 and msg and re.search(r"\.(jpg|png|gif)", msg[0]) and sec < 30,
      "one rank failing stops both, with that rank's message naming the file")
data = folder("data")
shutil.copytree(os.path.join(two, "synthetic"), data)
victim = sorted(os.listdir(os.path.join(data, "train")))[3]
with open(os.path.join(data, "train", victim), "wb") as f:
    f.write(b"not an image")
rc, out, err, sec = run(mpi(2, *COMMON, "--batch-size", "2", "--data-dir", data, "--out", folder("bad2")), timeout=60)
print(f"      corrupt {victim}: after {sec:.1f} s, exit status {rc}")
check(rc != 0 and victim in err and sec < 30, "a corrupt image stops both ranks, naming the file")

print(f"{len(failures)} failure(s)")
sys.exit(1 if failures else 0)
