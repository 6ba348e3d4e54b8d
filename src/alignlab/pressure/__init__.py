"""Optimization pressure: the Goodhart ledger (KL from the reference, proxy vs gold over it) and
the Gao, Schulman & Hilton (2022) fits of gold reward against sqrt(KL).

    from alignlab.pressure import read_ledger, format_ledger, fit_gao
    print(format_ledger(read_ledger(run_folder)))

Files: fits.py (the two functional forms, least squares, peaks, past-peak flags), ledger.py
(pressure.json -> Ledger, the table), command.py (`alignlab pressure RUN`).
"""

from alignlab.pressure.fits import GoodhartFit, fit_gao, past_peak_flags
from alignlab.pressure.ledger import Ledger, LedgerPoint, build_ledger, format_ledger, read_ledger

__all__ = ["GoodhartFit", "Ledger", "LedgerPoint", "build_ledger", "fit_gao", "format_ledger", "past_peak_flags",
           "read_ledger"]
