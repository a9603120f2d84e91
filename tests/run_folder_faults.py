#!/usr/bin/python3
"""Crash consistency of train_unet's run folder (train/run_folder.h), end to end.

  run_folder_faults.py kills TRAIN_UNET WORKDIR
      A tiny run is killed (SIGKILL) at many seeded moments: at each named point of the test hook
      TL_FAULT_KILL_AT (after config.json, after the data, after steps, after metrics.csv, after an
      epoch's checkpoint is written, linked as best, renamed to last) and after random delays; and
      stopped by SIGTERM, SIGINT and SIGHUP (from the hook and from outside). After each: last and
      best are complete and consistent, the app says whether the folder is resumable or
      restartable (with the command), that command finishes the run, and the final weights, best
      checkpoint and metrics are bit-identical to an uninterrupted run.
  run_folder_faults.py disk-full TRAIN_UNET WORKDIR
      The same run on a small tmpfs that fills up: every failed write is one clear line, the folder
      stays resumable or restartable, the previous checkpoint stays byte-identical, and once space
      is freed the run finishes bit-identical. Exit 77 (skipped) where mounting a tmpfs is not
      permitted.
"""
import concurrent.futures
import hashlib
import json
import os
import random
import re
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import time

FLAGS = ["--synthetic-count", "16", "--val-fraction", "0.5", "--image-size", "32x48", "--features", "4,8",
         "--epochs", "5", "--batch-size", "2", "--lr", "0.03", "--threads", "1", "--workers", "1",
         "--device", "cpu", "--quiet"]
EPOCHS, STEPS_PER_EPOCH = 5, 4
FAILURES = []


def fail(what):
    FAILURES.append(what)
    print("FAIL: " + what, flush=True)


def read_checkpoint(path):
    """(tensors {name: (dtype, shape, bytes)}, metadata) or None when missing; raises when incomplete."""
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    end = max(v["data_offsets"][1] for v in header.values())
    if len(data) != 8 + n + end:
        raise ValueError("%s: %d bytes, the header says %d" % (path, len(data), 8 + n + end))
    body = data[8 + n:]
    tensors = {k: (v["dtype"], tuple(v["shape"]), body[v["data_offsets"][0]:v["data_offsets"][1]])
               for k, v in header.items()}
    return tensors, meta


POSITION = ["step", "epoch", "train.batch_in_epoch", "train.best_epoch", "train.best_val_dice", "rng_offset"]


def same_checkpoint(a, b):
    return a is not None and b is not None and a[0] == b[0] and all(a[1].get(k) == b[1].get(k) for k in POSITION)


def metrics_rows(folder):
    path = os.path.join(folder, "metrics.csv")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.rsplit(",", 1)[0] for line in f.read().splitlines()[1:] if line]  # without seconds


def check_pair(folder, label):
    """The invariants at the instant of a kill: complete files, best holds the epoch the newer one names."""
    try:
        last = read_checkpoint(os.path.join(folder, "last.safetensors"))
        best = read_checkpoint(os.path.join(folder, "best.safetensors"))
    except Exception as e:  # noqa: BLE001
        fail("%s: incomplete checkpoint: %s" % (label, e))
        return
    present = [c for c in (last, best) if c is not None]
    if not present:
        return
    newest = max(present, key=lambda c: int(c[1]["step"]))
    named = int(newest[1]["train.best_epoch"])
    if named >= 1:
        if best is None:
            fail("%s: the run names epoch %d as best, best.safetensors is missing" % (label, named))
        elif int(best[1]["epoch"]) != named or best[1]["train.batch_in_epoch"] != "0":
            fail("%s: best.safetensors holds epoch %s, the run names epoch %d" % (label, best[1]["epoch"], named))
    rows = metrics_rows(folder)
    if len(rows) < int(newest[1]["epoch"]):
        fail("%s: metrics.csv has %d rows, the checkpoint is at epoch %s" % (label, len(rows), newest[1]["epoch"]))


def run(cmd, env=None, timeout=120):
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def env_with(fault=None):
    env = dict(os.environ)
    env.pop("TL_FAULT_KILL_AT", None)
    if fault:
        env["TL_FAULT_KILL_AT"] = fault
    return env


def command_from(text, exe):
    """The command the app's message gives, with the program's path: (kind, argv) or (None, None)."""
    m = re.search(r"(train_unet --resume \S+?)(;|$|\s)", text, re.M)
    if m:
        return "resumable", [exe] + shlex.split(m.group(1))[1:]
    m = re.search(r"start it (?:over )?with: (train_unet .*)$", text, re.M)
    if m:
        return "restartable", [exe] + shlex.split(m.group(1))[1:]
    return None, None


def recover(exe, out, label, ask_resume):
    """Asks the app what the folder is and runs the command it gives; returns the outcome's name."""
    if ask_resume:
        rc, so, se = run([exe, "--resume", os.path.join(out, "last.safetensors")])
        if rc == 0:
            return "resumable"
        kind, cmd = command_from(se, exe)
        if kind != "restartable":
            fail("%s: --resume failed (%d) without a restart command: %s" % (label, rc, se.strip()))
            return "stuck"
    else:
        rc, so, se = run([exe] + FLAGS + ["--out", out])
        if rc == 0:
            return "restartable" if "starting over" in so else "fresh"
        kind, cmd = command_from(se, exe)
        if kind != "resumable":
            fail("%s: a new run was refused (%d) without a resume command: %s" % (label, rc, se.strip()))
            return "stuck"
    if len(se.strip().splitlines()) != 1:
        fail("%s: not one line on stderr: %r" % (label, se))
    rc, so, se = run(cmd)
    if rc != 0:
        fail("%s: the command the app gave (%s) failed (%d): %s" % (label, " ".join(cmd), rc, se.strip()))
        return "stuck"
    return kind


def check_final(out, ref, label):
    last = read_checkpoint(os.path.join(out, "last.safetensors"))
    best = read_checkpoint(os.path.join(out, "best.safetensors"))
    if not same_checkpoint(last, ref["last"]):
        fail("%s: the final last.safetensors differs from the uninterrupted run's" % label)
    if not same_checkpoint(best, ref["best"]):
        fail("%s: the final best.safetensors differs from the uninterrupted run's" % label)
    if metrics_rows(out) != ref["metrics"]:
        fail("%s: metrics.csv differs from the uninterrupted run's" % label)
    temps = [n for n in os.listdir(out) if ".tmp." in n or ".link." in n]
    if temps:
        fail("%s: temporary files left: %s" % (label, temps))


def reference(exe, work):
    out = os.path.join(work, "reference")
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.monotonic()
    rc, so, se = run([exe] + FLAGS + ["--out", out])
    seconds = time.monotonic() - t0
    if rc != 0:
        print("the uninterrupted run failed (%d): %s" % (rc, se))
        sys.exit(1)
    ref = {"last": read_checkpoint(os.path.join(out, "last.safetensors")),
           "best": read_checkpoint(os.path.join(out, "best.safetensors")),
           "metrics": metrics_rows(out)}
    print("uninterrupted run: %.2f s, %d epochs, best epoch %s" % (seconds, EPOCHS, ref["last"][1]["train.best_epoch"]))
    return ref, seconds


def scenario(exe, work, ref, i, kind, what, again):
    """One run stopped at one moment, checked, recovered and compared; returns (exit kind, outcome, line)."""
    out = os.path.join(work, "run%02d" % i)
    shutil.rmtree(out, ignore_errors=True)
    cmd = [exe] + FLAGS + ["--out", out]
    if kind == "point":
        label = "TL_FAULT_KILL_AT=" + what
        rc, so, se = run(cmd, env_with(what))
    else:
        sig = signal.SIGKILL if kind == "timed" else what[0]
        delay = what if kind == "timed" else what[1]
        label = "%s after %.2f s" % (signal.Signals(sig).name, delay)
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_with())
        time.sleep(delay)
        p.send_signal(sig)
        so, se = p.communicate(timeout=120)
        rc = p.returncode
    names = {128 + signal.SIGTERM: "SIGTERM", 128 + signal.SIGINT: "SIGINT", 128 + signal.SIGHUP: "SIGHUP"}
    if rc == -signal.SIGKILL:
        ended = "killed"
    elif rc in names:
        ended = "stopped"
        if names[rc] not in so or "continue with: train_unet --resume" not in so:
            fail("%s: stopped (%d) without saying so: %r" % (label, rc, so[-300:]))
    elif rc == 0:
        ended = "not reached"  # the run ended before the moment
    elif kind == "signal" and rc == -what[0]:
        # The signal's default action: it came after the run had finished and put its handlers back,
        # on the way out. Nothing may be missing then: the folder must equal the uninterrupted run's.
        ended, rc = "not reached", 0
    else:
        fail("%s: exit status %d: %s" % (label, rc, se.strip()))
        return "failed", "stuck", label
    check_pair(out, label)
    if again and rc != 0:  # the recovery is killed too, then recovered again
        last = os.path.join(out, "last.safetensors")
        run([exe, "--resume", last] if os.path.exists(last) else cmd, env_with(again))
        label += ", then " + again + " in the recovery"
        check_pair(out, label)
    outcome = "finished" if rc == 0 else recover(exe, out, label, ask_resume=i % 2 == 1)
    check_final(out, ref, label)
    shutil.rmtree(out, ignore_errors=True)
    return ended, outcome, "%-64s exit %4d -> %s" % (label, rc, outcome)


def kills(exe, work):
    ref, seconds = reference(exe, work)
    rng = random.Random(20)
    steps = EPOCHS * STEPS_PER_EPOCH
    scenarios = [("point", "config"), ("point", "data")]
    scenarios += [("point", "step@%d" % s) for s in sorted(rng.sample(range(1, steps + 1), 6))]
    scenarios += [("point", "%s@%d" % (p, e)) for p in ("metrics", "checkpoint", "last")
                  for e in sorted(rng.sample(range(1, EPOCHS + 1), 4))]
    links, top = 0, None  # epochs that were linked as best: a new best validation dice (column 6)
    for row in ref["metrics"]:
        dice = float(row.split(",")[5])
        if top is None or dice > top:
            links, top = links + 1, dice
    scenarios += [("point", "best@%d" % e) for e in range(1, links + 1)]
    scenarios += [("timed", rng.uniform(0.0, seconds)) for _ in range(10)]
    scenarios += [("point", "step@%d:%s" % (rng.randint(1, steps), s)) for s in ("TERM", "INT", "HUP")]
    scenarios += [("point", "checkpoint@%d:TERM" % rng.randint(1, EPOCHS))]
    scenarios += [("signal", (s, rng.uniform(0.2 * seconds, seconds))) for s in
                  (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGTERM)]
    agains = ["%s@%d" % (rng.choice(["step", "checkpoint", "best", "last"]), rng.randint(1, 3)) if i % 6 == 3 else None
              for i in range(len(scenarios))]
    # Two at a time: each run uses one compute thread.
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(scenario, exe, work, ref, i, kind, what, agains[i])
                   for i, (kind, what) in enumerate(scenarios)]
        results = [f.result() for f in futures]
    ended, outcomes = {}, {}
    for e, outcome, line in results:
        print(line)
        ended[e] = ended.get(e, 0) + 1
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    recoveries_killed = sum(1 for (e, _, _), a in zip(results, agains) if a and e != "not reached")
    print("scenarios %d: killed by SIGKILL %d, stopped by a signal %d, finished before the moment %d; "
          "recoveries killed again %d" % (len(scenarios), ended.get("killed", 0), ended.get("stopped", 0),
                                          ended.get("not reached", 0), recoveries_killed))
    print("outcomes: " + ", ".join("%s %d" % kv for kv in sorted(outcomes.items())))
    print("each ended bit-identical to the uninterrupted run" if not FAILURES else "%d failure(s)" % len(FAILURES))
    return 0 if not FAILURES and ended.get("killed", 0) >= 30 else 1


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def fill(mount, leave):
    """Fills the tmpfs so that about `leave` bytes stay free."""
    st = os.statvfs(mount)
    free = st.f_bavail * st.f_frsize
    with open(os.path.join(mount, "filler"), "wb") as f:
        f.write(b"\0" * max(0, free - leave))


def one_clear_line(label, rc, se):
    lines = se.strip().splitlines()
    if rc != 1 or len(lines) != 1 or "No space left on device" not in se or "free some space" not in se:
        fail("%s: expected one line naming the full disk, got %d: %r" % (label, rc, se))
        return False
    return True


def disk_full(exe, work):
    mount = os.path.join(work, "tmpfs")
    os.makedirs(mount, exist_ok=True)
    if os.path.ismount(mount):  # left by an interrupted earlier run of this test
        subprocess.run(["umount", mount])
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", mount], stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        print("skipped: cannot mount a tmpfs here (%s)" % p.stderr.strip())
        return 77
    try:
        ref, _ = reference(exe, work)
        out = os.path.join(mount, "run")
        checks = 0
        # A new run on a disk with little room: each failure is one line; freeing space and giving
        # the command the app names finishes the run, bit-identical.
        # What the run needs before training: config.json, log.txt, the synthetic set, the splits.
        shutil.rmtree(out, ignore_errors=True)
        st = os.statvfs(mount)
        free0 = st.f_bavail * st.f_frsize
        run([exe] + FLAGS + ["--out", out], env_with("data"))
        st = os.statvfs(mount)
        data = free0 - st.f_bavail * st.f_frsize
        print("the data and the run's first files take %d KiB; a checkpoint about 110 KiB" % (data >> 10))
        for leave in (0, 8 << 10, data // 2, data - (4 << 10), data + (8 << 10), data + (120 << 10), data + (230 << 10)):
            shutil.rmtree(out, ignore_errors=True)
            fill(mount, leave)
            rc, so, se = run([exe] + FLAGS + ["--out", out])
            label = "new run, %d KiB free" % (leave >> 10)
            os.remove(os.path.join(mount, "filler"))
            if rc == 0:
                print("%-40s finished" % label)
                check_final(out, ref, label)
                continue
            checks += 1
            if one_clear_line(label, rc, se):
                check_pair(out, label)
                kind, cmd = command_from(se, exe)
                rc2, _, se2 = run(cmd)
                if rc2 != 0:
                    fail("%s: the command the app gave failed: %s" % (label, se2.strip()))
                check_final(out, ref, label)
                print("%-40s %s" % (label, se.strip()))
        # A run with checkpoints, resumed on a full disk: the checkpoints stay byte-identical.
        for leave in (0, 40 << 10):
            shutil.rmtree(out, ignore_errors=True)
            rc, _, se = run([exe] + FLAGS + ["--out", out], env_with("last@2:TERM"))
            if rc != 128 + signal.SIGTERM:
                fail("could not stop a run after epoch 2 (%d): %s" % (rc, se))
                continue
            before = {n: digest(os.path.join(out, n)) for n in ("last.safetensors", "best.safetensors")}
            fill(mount, leave)
            rc, so, se = run([exe, "--resume", os.path.join(out, "last.safetensors")])
            label = "resume, %d KiB free" % (leave >> 10)
            os.remove(os.path.join(mount, "filler"))
            checks += 1
            if one_clear_line(label, rc, se):
                after = {n: digest(os.path.join(out, n)) for n in before}
                if after != before:
                    fail("%s: a checkpoint changed on the failed write" % label)
                check_pair(out, label)
                kind, cmd = command_from(se, exe)
                if kind != "resumable":
                    fail("%s: no resume command in %r" % (label, se))
                else:
                    rc2, _, se2 = run(cmd)
                    if rc2 != 0:
                        fail("%s: the resume after freeing space failed: %s" % (label, se2.strip()))
                    check_final(out, ref, label)
                print("%-40s %s" % (label, se.strip()))
        print("disk full: %d failed writes, each one clear line; checkpoints unchanged; every run finished "
              "bit-identical after space was freed" % checks if not FAILURES else "%d failure(s)" % len(FAILURES))
        return 0 if not FAILURES and checks >= 4 else 1
    finally:
        subprocess.run(["umount", mount])


def main():
    mode, exe, work = sys.argv[1], os.path.abspath(sys.argv[2]), os.path.abspath(sys.argv[3])
    os.makedirs(work, exist_ok=True)
    return kills(exe, work) if mode == "kills" else disk_full(exe, work)


if __name__ == "__main__":
    sys.exit(main())
