"""The compute forecast: Ajeya Cotra's Biological Anchors model, standing alone.

Cotra (2020), "Forecasting TAI with biological anchors" (draft report, Open Philanthropy, with
its best-guess spreadsheet and Colab notebook), asks in which year the training run for a
transformative model first becomes affordable: how much computation the brain does; how much
training compute a network doing that much inference would need with 2020 algorithms, under
six hypotheses ("anchors"); how algorithmic progress lowers that; how cheaper hardware and
growing spending make it affordable. Cotra (2022), "Two-year update on my personal AI
timelines", revised her numbers.

    from alignlab.forecast import load_scenario, simulate
    forecast = simulate(load_scenario("cotra-2020"), draws=1_000_000, seed=0)
    forecast.quantile(0.5), forecast.p_by(2100)

Files: trends.py (the logistic trends, log10), distributions.py (inputs as 90% intervals),
scenario.py (TOML scenarios, overrides, checks), model.py (the vectorised Monte Carlo),
reference.py (the same model one draw at a time), sensitivity.py (tornado, sweeps), plots.py,
output.py (JSON/CSV/text), command.py (`alignlab forecast`), scenarios/*.toml.
This room imports nothing from the rest of alignlab except the run folder and file helpers.
"""

from alignlab.forecast.model import Forecast, simulate
from alignlab.forecast.scenario import Scenario, load_scenario, shipped_scenarios

__all__ = ["Forecast", "Scenario", "load_scenario", "shipped_scenarios", "simulate"]
