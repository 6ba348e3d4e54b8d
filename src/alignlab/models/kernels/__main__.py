"""``python -m alignlab.models.kernels``: build the decoding kernel now and say whether it is on;
measure which layout of the output layer's product this machine runs faster (once; kept)."""

from alignlab.models.kernels import status
from alignlab.models.kernels.layout import ENV, machine_layout

print(f"alignlab decoding kernel: {status()}")
entry = machine_layout()
print(f"alignlab output-layer layout: {entry['layout']} (h @ W^T {entry['ms']['rows']} ms, W @ h^T "
      f"{entry['ms']['weight']} ms on this machine; {ENV} overrides)")
