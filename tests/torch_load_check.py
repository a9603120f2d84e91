"""The reverse direction: loads an engine-written checkpoint strictly into the PyTorch UNet and checks
that it reproduces the engine's eval output.

    torch_load_check.py CHECKPOINT IO_FILE     (IO_FILE holds 'input' and the engine's 'output')

Prints the relative L2 error; exits 0 when it is at most 1e-4, 1 otherwise, 77 without torch."""
import os
import sys

try:
    import torch
except ImportError as e:
    print(f"skipped: PyTorch is not available ({e})")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402
from torch_unet import from_metadata  # noqa: E402

state, md = safetensors_io.read(sys.argv[1])
io, _ = safetensors_io.read(sys.argv[2])
model = from_metadata(md)
model.load_state_dict({k: v for k, v in state.items() if not k.startswith("optim.")}, strict=True)
model.eval()
with torch.no_grad():
    y = model(io["input"])
err = (torch.linalg.norm(y - io["output"]) / torch.linalg.norm(io["output"])).item()
print(f"torch loaded {sys.argv[1]} strictly; output relative L2 error vs the engine: {err:.3e}")
sys.exit(0 if err <= 1e-4 else 1)
