"""`alignlab pressure RUN`: print the Goodhart ledger of any policy run."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from alignlab.cli import Command
from alignlab.pressure.ledger import format_ledger, read_ledger


@dataclass
class PressureConfig:
    """Print a policy run's pressure ledger: KL from its reference, proxy and gold over it, the
    fitted Gao peak and the runs past it."""

    run: str = field(default="", metadata={"positional": True})
    """Run id, a unique prefix of one, or a run folder path."""
    json: bool = False
    """Print the ledger as one JSON object."""


def run_pressure(config: PressureConfig) -> int:
    from alignlab.runs import find_run

    if not config.run:
        raise ValueError("give a policy run id (see `alignlab runs list`)")
    ledger = read_ledger(find_run(config.run).path)
    if config.json:
        out = dataclasses.asdict(ledger)
        out["fit"] = ledger.fit.to_dict() if ledger.fit else None
        print(json.dumps(out, indent=2, default=str))
    else:
        print(format_ledger(ledger))
    return 0


PRESSURE = Command("pressure", "print the Goodhart ledger of a policy run", PressureConfig, run_pressure)
