"""`alignlab forecast` end to end: formats, run folders, plots, and clean refusals."""

import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from alignlab.cli import main
from alignlab.runs import list_runs

PNG = b"\x89PNG\r\n\x1a\n"
SMALL = ["--draws", "40000", "--sensitivity-draws", "10000"]


@pytest.fixture(autouse=True)
def runs_dir(tmp_path, monkeypatch):
    folder = tmp_path / "runs"
    monkeypatch.setenv("ALIGNLAB_RUNS_DIR", str(folder))
    return folder


def run(args, capsys):
    code = main(["forecast", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_has_every_year_quantiles_and_each_anchor(capsys, runs_dir):
    code, out, err = run(["--scenario", "cotra-2020", "--format", "json", *SMALL], capsys)
    assert code == 0, err
    result = json.loads(out)
    years = [str(y) for y in range(2025, 2101)]
    assert list(result["cdf"]) == years
    assert all(0.0 <= p <= 1.0 for p in result["cdf"].values())
    assert set(result["quantiles"]) == {"0.1", "0.25", "0.5", "0.75", "0.9"}
    assert all(v is None or 2025 <= v <= 2100 for v in result["quantiles"].values())
    assert result["quantiles"]["0.9"] is None
    assert set(result["by_anchor"]) == {"lifetime", "short_nn", "genome", "medium_nn", "long_nn", "evolution"}
    for cdf in result["by_anchor"].values():
        assert list(cdf) == years and all(0.0 <= p <= 1.0 for p in cdf.values())
    assert result["never"] == pytest.approx(0.1) and result["draws"] == 40000
    (saved,) = list_runs()
    assert saved.kind == "forecast" and saved.state == "finished" and saved.env["seed"] == 0
    assert json.loads((saved.path / "results.json").read_text())["cdf"] == result["cdf"]
    assert saved.config["scenario"] == "cotra-2020" and saved.config["set"] == []


def test_csv_has_a_row_per_year(capsys):
    code, out, _ = run(["--format", "csv", "--scenario", "cotra-2022", *SMALL], capsys)
    lines = out.strip().splitlines()
    assert code == 0 and lines[0].startswith("year,cdf,") and "gpt_nn" in lines[0]
    assert len(lines) == 1 + 76 and lines[-1].startswith("2100,")


def test_text_report_with_overrides_a_sweep_and_the_tornado(capsys):
    code, out, err = run(["--set", "spending.doubling_years=2.0", "hypotheses.evolution.weight=0.05",
                          "--sweep", "hardware.doubling_years=2,3", "--sensitivity", "--by-year", "2031", "2052", *SMALL],
                         capsys)
    assert code == 0, err
    assert "TAI affordable by:" in out and "P(by year):         2031:" in out
    assert "never                   15%" in out
    assert "Sweep of hardware.doubling_years:" in out and "Sensitivity of the median" in out
    assert "published:" in out and "saved to" in err
    assert "inputs changed from the scenario: spending.doubling_years=2.0 hypotheses.evolution.weight=0.05" in out


def test_out_writes_results_and_three_png_plots(capsys, tmp_path):
    out_dir = tmp_path / "plots"
    code, out, err = run(["--scenario", "cotra-2022", "--out", str(out_dir), *SMALL], capsys)
    assert code == 0, err
    for name in ("cdf.png", "trajectory.png", "tornado.png"):
        data = (out_dir / name).read_bytes()
        assert data[:8] == PNG and len(data) > 10_000, name
    result = json.loads((out_dir / "results.json").read_text())
    assert result["sensitivity"]["inputs"] and (out_dir / "cdf.csv").read_text().startswith("year,cdf")
    (saved,) = list_runs()
    assert {"cdf.png", "trajectory.png", "tornado.png", "results.json", "cdf.csv"} <= {p.name for p in saved.path.iterdir()}


@pytest.mark.parametrize("args, fragments", [
    (["--set", "spending.doubling_years=-1"], ["spending.doubling_years", "> 0"]),
    (["--set", "hypotheses.medium_nn.weight=0.5"], ["weights sum to 1.1", "0..1"]),
    (["--set", "hardware.speed=2"], ["unknown key 'hardware.speed'", "doubling_years"]),
    (["--scenario", "no-such-scenario"], ["cotra-2020", "TOML file"]),
    (["--sweep", "hardware.nothing=1,2"], ["hardware.nothing"]),
    (["--draws", "0"], ["draws = 0"]),
])
def test_bad_input_is_one_clean_line_and_exit_code_1(capsys, runs_dir, args, fragments):
    code, out, err = run(args, capsys)
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("alignlab forecast: ")
    for fragment in fragments:
        assert fragment in err
    assert not runs_dir.exists() or not list(runs_dir.iterdir())


def test_a_user_scenario_file_runs_and_one_missing_an_input_is_refused(capsys, tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('extends = "cotra-2020"\nname = "mine"\n[gdp]\ngrowth = 0.02\n')
    code, out, err = run(["--scenario", str(path), "--format", "json", *SMALL], capsys)
    assert code == 0, err
    assert json.loads(out)["scenario"] == "mine" and json.loads(out)["inputs"]["gdp"]["growth"] == 0.02
    shipped = (resources.files("alignlab.forecast") / "scenarios" / "cotra-2020.toml").read_text()
    path.write_text(shipped.replace("max_gdp_fraction = 0.01\n", ""))
    code, _, err = run(["--scenario", str(path)], capsys)
    assert code == 1 and "missing key 'spending.max_gdp_fraction'" in err and "<= 1" in err


def test_the_console_script_runs_end_to_end(tmp_path):
    script = Path(sys.executable).parent / "alignlab"
    env = {"ALIGNLAB_RUNS_DIR": str(tmp_path / "runs"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([str(script), "forecast", "--scenario", "cotra-2022", "--format", "json", "--draws", "20000",
                           "--seed", "3"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["seed"] == 3 and len(result["cdf"]) == 76 and "gpt_nn" in result["by_anchor"]
    helped = subprocess.run([str(script), "forecast", "--help"], capture_output=True, text=True, env=env, timeout=60)
    assert helped.returncode == 0 and "--sample-affordability" in helped.stdout and "KEY=VALUE" in helped.stdout
