"""``python -m alignlab.models.kernels``: build the decoding kernel now and say whether it is on."""

from alignlab.models.kernels import status

print(f"alignlab decoding kernel: {status()}")
