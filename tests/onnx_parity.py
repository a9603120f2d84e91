"""ONNX export parity: export_onnx's graph run by onnxruntime against unet_forward on the same input.

For each activation (relu, gelu, silu, pysilu) a small UNet (features 4,8,16,32: the default depth of
four poolings) gets random weights and random batch-norm running statistics (so that no layer is an
identity), is written as a checkpoint, exported three times and compared with the engine's eval forward:
  - the static graph at the checkpoint's training size (image_size 64x96, batch 2);
  - the static graph at an odd size (75x101, batch 1, --height/--width), where every skip is cropped;
  - the --dynamic graph at that odd size, where the crops are computed from the runtime shapes.
The relative L2 error ||ort - engine|| / ||engine|| must be at most 1e-5 in every case.

onnxruntime and numpy come from PyPI into a virtual environment this script sets up (--venv, inside the
build tree); when they cannot be installed the test reports itself skipped (exit 77), as it does for a
build without ONNX support (--no-onnx).

usage: onnx_parity.py --export-onnx BIN --unet-forward BIN --work DIR --venv DIR [--no-onnx]
"""

import argparse
import json
import os
import struct
import subprocess
import sys

SKIP = 77
TOL = 1e-5
FEATURES = [4, 8, 16, 32]
TRAIN_SIZE = (64, 96)
ODD_SIZE = (75, 101)


def ensure_venv(venv):
    """Re-runs this script with the venv's Python, creating the venv first when it lacks onnxruntime."""
    py = os.path.join(venv, "bin", "python")
    probe = [py, "-c", "import onnxruntime, numpy"]
    if not (os.path.exists(py) and subprocess.run(probe, capture_output=True).returncode == 0):
        print(f"setting up {venv} with onnxruntime and numpy (pip)", flush=True)
        steps = [[sys.executable, "-m", "venv", venv],
                 [py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "onnxruntime", "numpy"]]
        for cmd in steps:
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
                print("skipped: onnxruntime could not be installed (" + " ".join(cmd[:4]) + "): " + " | ".join(tail))
                sys.exit(SKIP)
        if subprocess.run(probe, capture_output=True).returncode != 0:
            print("skipped: onnxruntime installed but does not import in " + venv)
            sys.exit(SKIP)
    os.execv(py, [py] + sys.argv + ["--in-venv"])


# ---- safetensors with numpy (the format of nn/safetensors.h)
def write_safetensors(path, tensors, metadata=None):
    import numpy as np
    codes = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64"}
    header, offset, blobs = {}, 0, []
    for name, a in tensors.items():
        a = np.array(a, order="C")  # (ascontiguousarray would make a 0-d array 1-d)
        b = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": codes[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def read_safetensors_f32(path, name):
    import numpy as np
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    e = header[name]
    assert e["dtype"] == "F32", f"{path}: {name} is {e['dtype']}"
    b, end = e["data_offsets"]
    return np.frombuffer(data[b:end], dtype="<f4").reshape(e["shape"])


# ---- a random UNet checkpoint with the names of DESIGN.md
def unet_state(rng, in_ch, out_ch, features, conv_bias):
    import numpy as np
    state = {}

    def conv(prefix, cin, cout, k, bias):
        std = (2.0 / (cin * k * k)) ** 0.5
        state[prefix + ".weight"] = (rng.standard_normal((cout, cin, k, k)) * std).astype(np.float32)
        if bias:
            state[prefix + ".bias"] = (rng.standard_normal(cout) * 0.1).astype(np.float32)

    def bn(prefix, c):
        state[prefix + ".weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        state[prefix + ".bias"] = (rng.standard_normal(c) * 0.1).astype(np.float32)
        state[prefix + ".running_mean"] = (rng.standard_normal(c) * 0.2).astype(np.float32)
        state[prefix + ".running_var"] = rng.uniform(0.5, 2.0, c).astype(np.float32)
        state[prefix + ".num_batches_tracked"] = np.array(7, dtype=np.int64)

    def double_conv(prefix, cin, cout):
        conv(prefix + ".conv.0", cin, cout, 3, conv_bias)
        bn(prefix + ".conv.1", cout)
        conv(prefix + ".conv.3", cout, cout, 3, conv_bias)
        bn(prefix + ".conv.4", cout)

    cin = in_ch
    for i, f in enumerate(features):
        double_conv(f"downs.{i}", cin, f)
        cin = f
    double_conv("bottleneck", features[-1], 2 * features[-1])
    for k, f in enumerate(reversed(features)):
        state[f"ups.{2 * k}.weight"] = (rng.standard_normal((2 * f, f, 2, 2)) * (1.0 / (2 * f)) ** 0.5).astype(np.float32)
        state[f"ups.{2 * k}.bias"] = (rng.standard_normal(f) * 0.1).astype(np.float32)
        double_conv(f"ups.{2 * k + 1}", 2 * f, f)
    conv("final_conv", features[0], out_ch, 1, True)
    return state


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print("FAILED: " + " ".join(cmd) + "\n" + r.stdout + r.stderr)
        sys.exit(1)
    return r.stdout.strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--export-onnx", required=True)
    ap.add_argument("--unet-forward", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--venv", required=True)
    ap.add_argument("--no-onnx", action="store_true")
    ap.add_argument("--in-venv", action="store_true")
    args = ap.parse_args()
    if args.no_onnx:
        print("skipped: this build has no ONNX support (libonnx-dev and libprotobuf-dev were not found)")
        sys.exit(SKIP)
    if not args.in_venv:
        ensure_venv(args.venv)

    import numpy as np
    import onnxruntime as ort
    os.makedirs(args.work, exist_ok=True)
    rng = np.random.default_rng(17)
    worst, failures = 0.0, []
    for act in ["relu", "gelu", "silu", "pysilu"]:
        conv_bias = act == "silu"  # one model with conv biases, so that path is covered too
        ckpt = os.path.join(args.work, f"unet_{act}.safetensors")
        meta = {"model": "unet", "in_channels": "3", "out_channels": "1", "features": ",".join(map(str, FEATURES)),
                "activation": act, "conv_bias": "true" if conv_bias else "false",
                "image_size": f"{TRAIN_SIZE[0]}x{TRAIN_SIZE[1]}"}
        write_safetensors(ckpt, unet_state(rng, 3, 1, FEATURES, conv_bias), meta)
        for mode, (n, h, w), flags in [("static", (2,) + TRAIN_SIZE, []),
                                       ("static_odd", (1,) + ODD_SIZE, ["--height", str(ODD_SIZE[0]), "--width", str(ODD_SIZE[1])]),
                                       ("dynamic", (1,) + ODD_SIZE, ["--dynamic"])]:
            x = rng.standard_normal((n, 3, h, w)).astype(np.float32)
            tag = f"{act}_{mode}"
            xin, yout, model = (os.path.join(args.work, f"{tag}.{ext}") for ext in ["in.safetensors", "out.safetensors", "onnx"])
            write_safetensors(xin, {"input": x})
            run([args.export_onnx, "--checkpoint", ckpt, "--out", model] + flags)
            run([args.unet_forward, "--checkpoint", ckpt, "--input", xin, "--output", yout, "--device", "cpu"])
            ref = read_safetensors_f32(yout, "output").astype(np.float64)
            sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
            got = sess.run(["logits"], {"input": x})[0].astype(np.float64)
            if got.shape != ref.shape:
                failures.append(f"{tag}: onnxruntime output {got.shape}, unet_forward {ref.shape}")
                continue
            rel = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
            idx = np.unravel_index(np.argmax(np.abs(got - ref)), ref.shape)
            worst = max(worst, rel)
            ok = rel <= TOL
            print(f"{tag:16s} input {n}x3x{h}x{w} -> {'x'.join(map(str, ref.shape))}: relative L2 {rel:.3e} "
                  f"(tolerance {TOL:.0e}), max abs {np.abs(got - ref).max():.3e} at {tuple(map(int, idx))} "
                  f"{'ok' if ok else 'FAIL'}")
            if not ok:
                failures.append(f"{tag}: relative L2 {rel:.3e} > {TOL:.0e}")
    print(f"onnxruntime {ort.__version__}: worst relative L2 {worst:.3e} over 4 activations x 3 graphs")
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
