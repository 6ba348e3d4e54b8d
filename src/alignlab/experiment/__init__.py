"""The main job: the writing-prompts RLHF experiment with a Goodhart ledger and a report.

    alignlab experiment --profile quick        # `make demo`: the embedded model, ~15 minutes on 2 cores
    alignlab experiment --resume ID            # continue after the last finished stage

Files: profiles.py (sizes), pipeline.py (the stages), evaluate.py (judging a trained policy),
summary.py (summary.json), command.py.
The HTML report is drawn by report/experiment.py.
"""
