"""Training: one readable file per method (reward.py, sft.py, dpo.py, ppo.py, bon.py) and the
tested math they share (components.py)."""
