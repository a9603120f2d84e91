"""Peak memory of a training run whose data set is larger than its cache budget (--cache-mb).

usage: stream_memory.py TRAIN_UNET MAKE_SYNTHETIC WORK_DIR

Writes a synthetic set (64 photos of 320x480) once, then runs the same short training three times on
it at 320x480, where the decoded set takes 64 x 320 x 480 x 4 bytes = 37.5 MiB:
  cached    the default budget: every sample in memory;
  budget    --cache-mb 12: 12 MiB of samples in memory, the rest decoded every epoch;
  none      --cache-mb 0: nothing cached, the run's own working set (model, batches, decoding).
Each run's peak resident memory comes from wait4 (ru_maxrss). Asserts:
  - budget's peak <= none's peak + 12 MiB + SLACK_MIB: the cache stays in its budget;
  - cached's peak >= none's peak + 0.7 x 37.5 MiB: the measurement does see the cache, so the first
    check can fail;
  - the three runs end with the same weights (compared as bytes of last.safetensors' tensors), and the
    logs name the mode.
"""

import os
import shutil
import subprocess
import sys

SAMPLES, H, W = 64, 320, 480
BUDGET_MIB = 12
SLACK_MIB = 6  # allocator slack: freed decode buffers kept by malloc, thread stacks
IDLE_LIMIT_MIB = 64  # train_unet --help's resident size above which the peaks cannot show the cache
DATA_MIB = SAMPLES * H * W * 4 / 2**20


def run(cmd, quiet=False):
    # Blocks of 128 KiB and more straight from mmap and back to the system when freed (glibc otherwise
    # raises that threshold as it goes and keeps freed blocks): the peak then follows the live memory.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    if quiet:
        with open(os.devnull, "w") as null:
            pid = os.posix_spawn(cmd[0], cmd, env, file_actions=[(os.POSIX_SPAWN_DUP2, null.fileno(), 1)])
    else:
        pid = os.posix_spawn(cmd[0], cmd, env)
    _, status, usage = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        print("FAILED: " + " ".join(cmd))
        sys.exit(1)
    return usage.ru_maxrss / 1024.0  # KiB on Linux -> MiB


def tensors(path):
    import json
    import struct
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    return {k: data[v["data_offsets"][0]:v["data_offsets"][1]] for k, v in header.items() if k != "__metadata__"}


def main():
    train_unet, make_synthetic, work = sys.argv[1:4]
    shutil.rmtree(work, ignore_errors=True)
    data = os.path.join(work, "data")
    os.makedirs(work)
    subprocess.run([make_synthetic, "--out", data, "--count", str(SAMPLES)], check=True, stdout=subprocess.DEVNULL)
    # A build with the CUDA backend maps cuBLAS and the CUDA runtime in at start-up (over 200 MiB of
    # resident pages before any work), and then the peak is the start-up's and the data's decode, not
    # the cache's: the comparison below cannot see the cache, so it is reported as skipped.
    idle = run([train_unet, "--help"], quiet=True)
    if idle > IDLE_LIMIT_MIB:
        print(f"skipped: train_unet alone is resident at {idle:.1f} MiB (a build with the CUDA backend); "
              f"the peak would not show a {DATA_MIB:.1f} MiB cache. Run it on a build configured with -DTL_CUDA=OFF.")
        sys.exit(77)
    peaks = {}
    for name, cache in [("cached", "-1"), ("budget", str(BUDGET_MIB)), ("none", "0")]:
        out = os.path.join(work, name)
        peaks[name] = run([train_unet, "--data-dir", data, "--image-size", f"{H}x{W}", "--features", "4,8",
                           "--epochs", "1", "--max-steps", "8", "--batch-size", "2", "--workers", "2",
                           "--threads", "1", "--device", "cpu", "--quiet", "--cache-mb", cache, "--out", out])
        log = open(os.path.join(out, "log.txt")).read()
        line = [l for l in log.splitlines() if l.startswith("data cache:")]
        print(f"{name:7s} --cache-mb {cache:>3s}: peak RSS {peaks[name]:.1f} MiB; {line[0] if line else 'no data cache line'}")
        if not line or (("streaming" in line[0]) != (name != "cached")):
            print("FAILED: the log does not say the expected mode")
            sys.exit(1)
    limit = peaks["none"] + BUDGET_MIB + SLACK_MIB
    seen = peaks["cached"] - peaks["none"]
    print(f"decoded set {DATA_MIB:.1f} MiB; budget run peak {peaks['budget']:.1f} MiB, limit {limit:.1f} MiB "
          f"(no-cache peak + {BUDGET_MIB} MiB budget + {SLACK_MIB} MiB slack); cached run is {seen:.1f} MiB above no-cache")
    ok = True
    if peaks["budget"] > limit:
        print("FAILED: the budget run's peak is above its limit")
        ok = False
    if seen < 0.7 * DATA_MIB:
        print(f"FAILED: the cached run is only {seen:.1f} MiB above the no-cache run (expected >= {0.7 * DATA_MIB:.1f})")
        ok = False
    ref = tensors(os.path.join(work, "cached", "last.safetensors"))
    for name in ["budget", "none"]:
        if tensors(os.path.join(work, name, "last.safetensors")) != ref:
            print(f"FAILED: the {name} run's weights differ from the cached run's")
            ok = False
    if not ok:
        sys.exit(1)
    print("ok: the same weights from all three runs")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
