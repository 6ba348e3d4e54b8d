"""Scenarios: shipped ones load, --set changes any input, and bad ones are refused with the key
and the accepted range."""

import copy

import pytest

from alignlab.forecast.scenario import (load_raw, load_scenario, parse_assignment, scenario_from_dict,
                                        shipped_scenarios)


@pytest.fixture(scope="module")
def raw():
    return load_raw("cotra-2020")


def refused(data, *fragments):
    with pytest.raises(ValueError) as err:
        scenario_from_dict(data, "test")
    for fragment in fragments:
        assert fragment in str(err.value), str(err.value)
    return str(err.value)


def test_shipped_scenarios_load_with_six_anchors_and_a_tenth_never():
    assert {"cotra-2020", "cotra-2022"} <= set(shipped_scenarios())
    s = load_scenario("cotra-2020")
    assert [h.name for h in s.hypotheses] == ["lifetime", "short_nn", "genome", "medium_nn", "long_nn", "evolution"]
    weights = {h.name: h.weight for h in s.hypotheses}
    # Cotra 2020 best guess: 20% short / 30% medium / 15% long (not the swapped 15/20 of some summaries)
    assert weights == {"lifetime": 0.05, "short_nn": 0.20, "genome": 0.10, "medium_nn": 0.30, "long_nn": 0.15,
                       "evolution": 0.10}
    assert s.never == pytest.approx(0.10)


def test_the_2022_scenario_extends_2020_and_replaces_the_published_figures():
    s = load_scenario("cotra-2022")
    assert "gpt_nn" in [h.name for h in s.hypotheses]
    assert s.section("hardware") == load_scenario("cotra-2020").section("hardware")
    assert set(s.data["published"]["p_by_year"]) == {"2030", "2036", "2040", "2050"}


def test_set_overrides_numbers_tables_and_distributions():
    s = load_scenario("cotra-2020", ["spending.doubling_years=2.0", "hypotheses.evolution.weight=0",
                                     "anchor_defaults.brain_flops={ lognormal = [12, 18] }"])
    assert s.section("spending")["doubling_years"] == 2.0
    assert s.never == pytest.approx(0.20)
    assert s.hypotheses[0].inputs["brain_flops"] == {"lognormal": [12, 18]}
    assert parse_assignment("title=My run") == ("title", "My run")
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        parse_assignment("spending.doubling_years")


def test_a_user_file_can_extend_a_shipped_scenario(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('extends = "cotra-2020"\nname = "mine"\n[hardware]\ndoubling_years = 3.0\n')
    s = load_scenario(str(path))
    assert s.name == "mine" and s.section("hardware")["doubling_years"] == 3.0


def test_negative_doubling_time_is_refused_with_key_and_range(raw):
    data = copy.deepcopy(raw)
    data["hardware"]["doubling_years"] = -2.5
    refused(data, "hardware.doubling_years", "-2.5", "> 0", "<= 100")
    with pytest.raises(ValueError, match="spending.doubling_years"):
        load_scenario("cotra-2020", ["spending.doubling_years=0"])


def test_weights_summing_above_one_are_refused(raw):
    data = copy.deepcopy(raw)
    data["hypotheses"]["medium_nn"]["weight"] = 0.45
    refused(data, "weights sum to 1.05", "accepted range: 0..1")


def test_unknown_keys_are_refused_where_they_are(raw):
    for path, expected in ((("hardware", "doubling_yrs"), "hardware.doubling_yrs"),
                           (("hypotheses", "evolution", "halving"), "hypotheses.evolution.halving"),
                           (("colour",), "colour")):
        data = copy.deepcopy(raw)
        node = data
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = 1
        message = refused(data, "unknown key", expected)
        assert "accepted" in message


def test_missing_inputs_are_refused_with_their_range(raw):
    data = copy.deepcopy(raw)
    del data["spending"]["dollars"]
    refused(data, "missing key 'spending.dollars'", ">= 1", "$")
    data = copy.deepcopy(raw)
    del data["hypotheses"]["genome"]["algorithm_max_oom"]
    refused(data, "hypotheses.genome.algorithm_max_oom")
    data = copy.deepcopy(raw)
    del data["projection"]
    refused(data, "missing table [projection]")


@pytest.mark.parametrize("override, fragment", [
    ("spending.max_gdp_fraction=1.5", "spending.max_gdp_fraction"),
    ("hardware.doubling_years=nan", "hardware.doubling_years"),
    ("hypotheses.lifetime.weight=nan", "hypotheses.lifetime.weight"),
    ("gdp.growth=3", "gdp.growth"),
    ("projection.end_year=2020", "projection.end_year"),
    ("hardware.max_flop_per_dollar=1e16", "hardware.max_flop_per_dollar"),
    ("hypotheses.short_nn.weight=-0.1", "hypotheses.short_nn.weight"),
    ("anchor_defaults.scaling_exponent={ normal = [0.5, 7] }", "anchor_defaults.scaling_exponent"),
    ("low_requirement_update.thresholds=[27, 26]", "same length"),
    ("uncertainty.hardware.reference_year={ normal = [2019, 2021] }", "uncertainty.hardware.reference_year"),
    ("sensitivity.nothing=[1, 2]", "names no input"),
])
def test_out_of_range_overrides_are_refused(override, fragment):
    with pytest.raises(ValueError, match=fragment.replace("[", r"\[").replace(".", r"\.")):
        load_scenario("cotra-2020", [override])


def test_an_unknown_scenario_says_what_exists():
    with pytest.raises(FileNotFoundError, match="cotra-2020"):
        load_scenario("cotra-2099")
