"""Small worlds that make a claim testable, standing nearly alone: the library code imports only
the run folder and file helpers of alignlab, and `hills_monitors.py` the white-box curvature
(whitebox/curvature.py); the command modules import `alignlab.cli` as every command does.

- hills.py: tessellating hills (DaemonicSigil 2020), do "demons" form in noisy constant-step
  descent? The loss, its closed-form gradient, the batched optimizer and its measurements.
- plots.py: the pictures of a hills run; hills_report.py: its summaries and tables.
- shutdown.py, drest.py: the shutdown problem and DReST agents; shutdown_plots.py,
  shutdown_report.py: their pictures, summaries and report.
- offswitch.py: the off-switch game and an assistance game (when to ask); offswitch_report.py.
- command.py: `alignlab toys hills`, `shutdown` and `offswitch` (options, then the calls above).

    from alignlab.toys import simulate
    history = simulate(dim=16, eps=[0.0025], steps=5000, lr=0.2, seeds=[0, 1, 2, 3], record_every=50)
    history.x0[-1]          # (seeds, eps) x0 after the last step
"""

from alignlab.toys.hills import (History, Landscape, hills_grad, hills_loss, make_landscape, participation_ratio,
                                 simulate)

__all__ = ["History", "Landscape", "hills_grad", "hills_loss", "make_landscape", "participation_ratio", "simulate"]
