"""The report's "best configuration meeting the constraints" section, and the constraints of a sweep file."""

from __future__ import annotations

import pytest
import yaml

from chronosweep.cli import main as cli_main
from chronosweep.core.typed import ConfigError
from chronosweep.evaluation import constraints as bounds
from chronosweep.report.build import ReportOptions, make_report
from chronosweep.sweep.spec import parse_sweep
from tests.test_report import BOOT, predictions, tune_trial

LOCAL = {"reliability": 0.95, "generalization": 0.75, "locality_acc": 0.95}


def _experiment(tmp_path, trials: dict[str, dict], constraints: dict | None = None):
    exp = tmp_path / "local-edits"
    exp.mkdir()
    (exp / "sweep.yaml").write_text(yaml.safe_dump({"objective": {"weights": {"reliability": 1, "generalization": 1,
                                                                              "locality": 1}},
                                                    **({"constraints": constraints} if constraints else {})},
                                                   sort_keys=False))
    for i, (name, spec) in enumerate(trials.items()):
        rewrite, para, loc_acc, edit_s = spec["rewrite"], spec["paraphrase"], spec["locality_acc"], spec["edit_s"]
        tune_trial(exp, f"trial_{i:05d}_{name}", {"lora.kl_weight": spec["kl"]}, method="lora",
                   options={"kl_weight": spec["kl"], "layer_start": 12, "layer_width": 6},
                   preds=predictions(rewrite=rewrite, paraphrase=para, locality=[0.5, 0.5]),
                   locality_acc=loc_acc, edit_seconds_per_edit=edit_s)
    return exp


TRIALS = {
    # Meets everything.
    "meets": {"kl": 1.0, "rewrite": [1, 1, 1, 1], "paraphrase": [[1], [1], [1], [0]], "locality_acc": 0.96, "edit_s": 0.8},
    # Meets everything with a better objective (generalization 1.0): the one to name.
    "best": {"kl": 2.0, "rewrite": [1, 1, 1, 1], "paraphrase": [[1], [1], [1], [1]], "locality_acc": 0.95, "edit_s": 1.2},
    # Best objective of all, but locality_acc misses its bound.
    "leaky": {"kl": 0.0, "rewrite": [1, 1, 1, 1], "paraphrase": [[1], [1], [1], [1]], "locality_acc": 0.60,
              "edit_s": 0.5},
}


def test_the_report_names_the_best_trial_meeting_every_bound(tmp_path):
    trials = dict(TRIALS)
    trials["leaky"] = {**trials["leaky"], "paraphrase": [[1], [1], [1], [1]]}
    exp = _experiment(tmp_path, trials)
    result = make_report([exp], tmp_path / "report", ReportOptions(bootstrap=BOOT, plots=False, progress=False,
                                                                    constraints=LOCAL, formats=["md", "csv"]))
    table = result.constrained
    assert table["meets"].to_list() == [True, True, False]
    assert table["trial"].to_list()[:2] == ["trial_00001_best", "trial_00000_meets"]
    assert table.filter(~table["meets"])["misses"].to_list() == ["locality_acc short by 0.35"]
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "## Best configuration meeting the constraints" in summary
    assert "reliability >= 0.95, generalization >= 0.75, locality_acc >= 0.95" in summary
    assert "**trial_00001_best** (lora: kl_weight=2.0" in summary and "best of 2 trials that do (of 3)" in summary
    assert (tmp_path / "report" / "constrained.csv").exists()


def test_the_report_says_none_when_no_trial_meets_them(tmp_path):
    exp = _experiment(tmp_path, {"leaky": TRIALS["leaky"], "meets": {**TRIALS["meets"], "locality_acc": 0.9}})
    result = make_report([exp], tmp_path / "report", ReportOptions(bootstrap=BOOT, plots=False, progress=False,
                                                                    constraints={**LOCAL, "edit_seconds_per_edit": 0.9}))
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "**none**: no finished trial of 2 meets all of them" in summary
    assert "edit_seconds_per_edit <= 0.9" in summary
    # Closest first: 'meets' misses one bound by 0.05, 'leaky' one by 0.35.
    assert result.constrained["trial"].to_list() == ["trial_00001_meets", "trial_00000_leaky"]
    assert result.constrained["misses"].to_list() == ["locality_acc short by 0.05", "locality_acc short by 0.35"]


def test_report_command_reads_the_sweeps_constraints_and_require_overrides(tmp_path, capsys):
    exp = _experiment(tmp_path, TRIALS, constraints=LOCAL)
    assert cli_main(["report", str(exp), "--out", str(tmp_path / "r1"), "--no-plots", "--bootstrap", "100"]) == 0
    out = capsys.readouterr().out
    assert "constraints: reliability >= 0.95, generalization >= 0.75, locality_acc >= 0.95 (the sweep's own)" in out
    assert "best meeting 3 constraints: trial_00001_best (lora)" in out
    assert cli_main(["report", str(exp), "--out", str(tmp_path / "r2"), "--no-plots", "--bootstrap", "100",
                     "--require", "locality_acc=0.5", "--require", "edit_seconds_per_edit<=0.6"]) == 0
    assert "best meeting 2 constraints: trial_00002_leaky (lora)" in capsys.readouterr().out
    assert cli_main(["report", str(exp), "--out", str(tmp_path / "r3"), "--require", "locality_acc<=0.5"]) != 0
    assert "locality_acc is better higher" in capsys.readouterr().err


def test_sweep_files_validate_their_constraints():
    base = {"base": {"method": "lora"}, "space": {"lora.rank": [4, 8]}, "search": "grid"}
    spec = parse_sweep({**base, "constraints": LOCAL}, "s.yaml")
    assert spec.file.constraints == LOCAL
    with pytest.raises(ConfigError) as err:
        parse_sweep({**base, "constraints": {"reliabilty": 0.9, "locality_acc": "high"}}, "s.yaml")
    assert "constraints.reliabilty: unknown metric" in str(err.value)
    assert "constraints.locality_acc: expected a number" in str(err.value)


def test_bounds_follow_each_metrics_direction():
    assert bounds.describe({"reliability": 0.95, "edit_seconds_per_edit": 0.9}) == \
        "reliability >= 0.95, edit_seconds_per_edit <= 0.9"
    assert bounds.shortfalls({"reliability": 0.9, "edit_seconds_per_edit": 1.0},
                             {"reliability": 0.95, "edit_seconds_per_edit": 0.9}) == \
        {"reliability": pytest.approx(0.05), "edit_seconds_per_edit": pytest.approx(0.1)}
    assert bounds.shortfalls({"reliability": None}, {"reliability": 0.5}) == {"reliability": None}
    assert bounds.shortfalls({"reliability": 0.95}, {"reliability": 0.95}) == {}
