"""Who may train, promote and read, for real: `make tracking-server AUTH=basic` on PostgreSQL.

One module-wide server: the tracking store and the auth database are two fresh PostgreSQL
databases of this module (dropped afterwards), artifacts in a temporary folder behind the
server's proxy. The identities come from `python -m skyprophet.ops.auth --create-roles`, run as the admin;
the pipeline runs as users run it (`mlflow run . -e main`, `python -m steps.…`) with its own
MLFLOW_TRACKING_USERNAME / _PASSWORD. Every refusal is checked on the wire (status and body) and
in PostgreSQL (nothing written).
"""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import psycopg2
import pytest
import requests
from mlflow.exceptions import MlflowException

from skyprophet.config import MODEL_NAME, PROJECT_ROOT
from skyprophet.ops.processes import free_port, mlflow_run_command, process_env
from skyprophet.storage import sha256_of
from tests.conftest import POSTGRES_URL, TrackingServer, postgres_admin
from tests.factory import write_flights

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MODEL = MODEL_NAME
EXPERIMENT = "skyprophet-auth"
TIMEOUT = 600
FAST = 60


@dataclass(frozen=True)
class User:
    name: str
    password: str

    @property
    def env(self) -> dict[str, str]:
        return {"MLFLOW_TRACKING_USERNAME": self.name, "MLFLOW_TRACKING_PASSWORD": self.password}


@dataclass
class AuthServer:
    """The authenticated server, its databases and the identities set up on it."""

    server: TrackingServer
    tracking_db: str
    auth_db: str
    admin: User
    pipeline: User
    promoter: User
    reader: User
    root: Path

    @property
    def url(self) -> str:
        return self.server.url

    def env(self, user: User | None, experiment: str = EXPERIMENT) -> dict[str, str]:
        """A client process's environment: the server, the experiment, a datasets folder, maybe a login."""
        return {
            "MLFLOW_TRACKING_URI": self.url,
            "MLFLOW_EXPERIMENT_NAME": experiment,
            "SKYPROPHET_DATASETS_DIR": str(self.root / "datasets" / (user.name if user else "anonymous")),
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
            **(user.env if user else {}),
        }


def run_command(command: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    # The child gets no login of this process's environment, only the one of `env`.
    base = {k: v for k, v in process_env(env).items() if not (k.startswith("MLFLOW_TRACKING_") and k not in env)}
    done = subprocess.run(command, cwd=PROJECT_ROOT, env=base, capture_output=True, text=True, timeout=TIMEOUT)
    return done, time.monotonic() - started


def step(name: str, env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess, float]:
    return run_command([sys.executable, "-m", f"steps.{name}", *args], env)


def rows(database: str, query: str, *params) -> list[tuple]:
    connection = psycopg2.connect(database, connect_timeout=5)
    try:
        with connection.cursor() as cursor:
            cursor.execute(query, params)
            return cursor.fetchall()
    finally:
        connection.close()


def registry_state(database: str) -> dict[str, list[tuple]]:
    """Versions (number, stage), aliases and runs of the tracking store, read behind MLflow's back."""
    return {
        "versions": rows(
            database, "select version, current_stage from model_versions where name = %s order by 1", MODEL
        ),
        "aliases": rows(
            database, "select alias, version from registered_model_aliases where name = %s order by 1", MODEL
        ),
        "runs": rows(database, "select run_uuid, status from runs order by 1"),
        "models": rows(database, "select name from registered_models order by 1"),
    }


def create_database(prefix: str) -> str:
    name = f"{prefix}_{time.monotonic_ns()}"
    admin = postgres_admin()
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    return name


def drop_database(name: str) -> None:
    admin = postgres_admin()
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def new_user(role: str) -> User:
    return User(f"skyprophet-{role}", secrets.token_urlsafe(18))


@pytest.fixture(scope="module")
def auth_server(tracking_server, tmp_path_factory) -> AuthServer:
    root = tmp_path_factory.mktemp("auth")
    names = [create_database("skyprophet_auth_tracking"), create_database("skyprophet_auth_users")]
    try:
        tracking_db, auth_db = (f"{POSTGRES_URL}/{name}" for name in names)
        admin = User("skyprophet-admin", secrets.token_urlsafe(18))
        server = tracking_server(
            {
                "MLFLOW_BACKEND_STORE_URI": tracking_db,
                "MLFLOW_ARTIFACTS_DESTINATION": str(root / "artifacts"),
                "MLFLOW_AUTH": "basic",
                "MLFLOW_AUTH_ADMIN_USERNAME": admin.name,
                "MLFLOW_AUTH_ADMIN_PASSWORD": admin.password,
                "MLFLOW_AUTH_DATABASE_URI": auth_db,
            }
        )
        users = {role: new_user(role) for role in ("pipeline", "promoter", "reader")}
        roles_env = {f"SKYPROPHET_{role.upper()}_USERNAME": user.name for role, user in users.items()}
        roles_env |= {f"SKYPROPHET_{role.upper()}_PASSWORD": user.password for role, user in users.items()}
        env = {"MLFLOW_TRACKING_URI": server.url, **roles_env, **admin.env}
        done, _ = run_command(
            [
                sys.executable,
                "-m",
                "skyprophet.ops.auth",
                "--create-roles",
                "--experiment",
                EXPERIMENT,
                "--model-name",
                MODEL,
            ],
            env,
        )
        assert done.returncode == 0, f"create-roles: {done.stderr[-3000:]}"
        yield AuthServer(server, tracking_db, auth_db, admin, root=root, **users)
    finally:
        for name in names:
            drop_database(name)


@pytest.fixture(scope="module")
def pipeline_run(auth_server) -> subprocess.CompletedProcess:
    """The pipeline identity runs etl -> train -> register (`mlflow run . -e main`, promote=never: staging only)."""
    flights = write_flights(auth_server.root / "flights.csv")
    env = auth_server.env(auth_server.pipeline)
    command = mlflow_run_command(
        "main", EXPERIMENT, data_uri=flights, sha256=sha256_of(flights), n_estimators=20, cv_folds=2, promote="never"
    )
    return run_command(command, env)[0]


def api(
    server: AuthServer, method: str, path: str, user: User | None, prefix: str = "api", **kwargs
) -> requests.Response:
    """A REST call (``prefix="ajax-api"``: the route the UI uses) as ``user``."""
    auth = (user.name, user.password) if user else None
    return requests.request(method, f"{server.url}/{prefix}/2.0/mlflow/{path}", auth=auth, timeout=30, **kwargs)


def trusted_tags(database: str) -> dict[str, list[tuple]]:
    """The ``acceptance.*`` / ``promotion.*`` tags of the versions and of the registered model, read from PostgreSQL."""
    trusted = "(key like 'acceptance.%%' or key like 'promotion.%%')"
    return {
        "versions": rows(
            database,
            f"select version, key, value from model_version_tags where name = %s and {trusted} order by 1, 2",
            MODEL,
        ),
        "model": rows(
            database, f"select key, value from registered_model_tags where name = %s and {trusted} order by 1", MODEL
        ),
    }


def not_accepted(version: str, state: str, move: str) -> str:
    """The server's answer to moving production to a version without acceptance.verdict=passed."""
    return (
        f"[production-needs-acceptance] version {version} of {MODEL!r} has not passed the acceptance checks "
        f"(acceptance.verdict {state}), so {move}: run `make promote VERSION={version}`"
    )


def test_the_server_refuses_to_start_without_an_admin_password(tmp_path):
    env = {
        "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts"),
        "MLFLOW_AUTH_DATABASE_URI": f"sqlite:///{tmp_path / 'auth.db'}",
        "MLFLOW_AUTH_ADMIN_PASSWORD": "",
    }
    for how in (["--auth", "basic"], []):
        done, seconds = run_command(
            [sys.executable, "-m", "skyprophet.ops.tracking_server", "--port", str(free_port()), *how],
            {**env, "MLFLOW_AUTH": "basic" if not how else ""},
        )
        assert done.returncode != 0, f"{how or 'MLFLOW_AUTH=basic'}: the server must not start"
        assert "MLFLOW_AUTH_ADMIN_PASSWORD is not set" in done.stderr, done.stderr[-2000:]
        assert seconds < FAST
    assert not (tmp_path / "auth.db").exists(), "no auth database created"

    # The embedded default says it is open (and stops here at a store that does not answer).
    done, _ = run_command(
        [sys.executable, "-m", "skyprophet.ops.tracking_server", "--port", str(free_port())],
        {"MLFLOW_BACKEND_STORE_URI": f"{POSTGRES_URL}/skyprophet_no_such_database_{time.monotonic_ns()}"},
    )
    assert done.returncode != 0
    assert "authentication: none. Anyone who reaches" in done.stderr, done.stderr[-2000:]


def test_no_credentials_or_a_wrong_password_get_401_and_the_step_says_who(auth_server):
    assert api(auth_server, "GET", "experiments/search?max_results=1", None).status_code == 401
    wrong = User(auth_server.pipeline.name, "not-the-password")
    answer = api(auth_server, "GET", "experiments/search?max_results=1", wrong)
    assert answer.status_code == 401, answer.text
    assert answer.headers.get("WWW-Authenticate") == 'Basic realm="mlflow"'
    before = registry_state(auth_server.tracking_db)

    flights = write_flights(auth_server.root / "refused.csv")
    for user, expected in (
        (None, "refused the login of no identity"),
        (wrong, f"refused the login of user {wrong.name!r} (MLFLOW_TRACKING_USERNAME) (HTTP 401 Unauthorized)"),
    ):
        env = auth_server.env(user)
        done, seconds = step("etl", env, "--data-uri", str(flights))
        assert done.returncode != 0, "etl cannot run without a login"
        assert "TrackingAccessError" in done.stderr and expected in done.stderr, done.stderr[-2000:]
        assert seconds < FAST
        assert not Path(env["SKYPROPHET_DATASETS_DIR"]).exists(), "nothing fetched"
    assert registry_state(auth_server.tracking_db) == before, "nothing written"


def test_the_pipeline_identity_runs_etl_train_register(auth_server, pipeline_run):
    assert pipeline_run.returncode == 0, pipeline_run.stderr[-4000:]
    state = registry_state(auth_server.tracking_db)
    assert state["versions"] == [(1, "Staging")], state
    assert state["aliases"] == [("staging", 1)], "the pipeline staged the version and did not promote it"
    steps = rows(
        auth_server.tracking_db,
        "select t.value from tags t join runs r on r.run_uuid = t.run_uuid where t.key = 'skyprophet.step' "
        "and r.status = 'FINISHED' order by 1",
    )
    assert [s for (s,) in steps] == ["etl", "main", "refit", "register", "train"], steps


def test_a_reader_cannot_register_or_move_the_alias_and_nothing_is_written(auth_server, pipeline_run):
    assert pipeline_run.returncode == 0, pipeline_run.stderr[-2000:]
    reader = auth_server.reader
    before = registry_state(auth_server.tracking_db)
    assert api(auth_server, "GET", f"registered-models/get?name={MODEL}", reader).status_code == 200, "readers read"

    source = rows(auth_server.tracking_db, "select source, run_id from model_versions where name = %s", MODEL)[0]
    answer = api(auth_server, "POST", "model-versions/create", reader, json={"name": MODEL, "source": source[0]})
    assert (answer.status_code, answer.text) == (403, "Permission denied"), "MLflow's own refusal"
    answer = api(
        auth_server,
        "POST",
        "registered-models/alias",
        reader,
        json={"name": MODEL, "alias": "production", "version": "1"},
    )
    assert answer.status_code == 403, answer.text
    answer = api(
        auth_server, "POST", "registered-models/alias", reader, json={"name": MODEL, "alias": "staging", "version": "1"}
    )
    assert (answer.status_code, answer.text) == (403, "Permission denied"), "readers set no alias at all"
    answer = api(
        auth_server,
        "POST",
        "model-versions/transition-stage",
        reader,
        json={"name": MODEL, "version": "1", "stage": "Staging", "archive_existing_versions": False},
    )
    assert answer.status_code == 403, answer.text

    # The step, as a reader: the start-of-step check names the identity and what it lacks.
    done, seconds = step("register", auth_server.env(reader), "--model-name", MODEL, "--promote", "force")
    assert done.returncode != 0
    expected = (
        f"(artifacts of experiment {EXPERIMENT!r}) to user "
        f"{reader.name!r} (MLFLOW_TRACKING_USERNAME) (HTTP 403 Forbidden): it lacks EDIT on experiment {EXPERIMENT!r}"
    )
    assert expected in done.stderr, done.stderr[-3000:]
    assert seconds < FAST
    assert registry_state(auth_server.tracking_db) == before, "no run, no version, no alias written"


def test_only_the_promoter_moves_production(auth_server, pipeline_run, monkeypatch):
    assert pipeline_run.returncode == 0, pipeline_run.stderr[-2000:]
    pipeline, promoter = auth_server.pipeline, auth_server.promoter
    assert registry_state(auth_server.tracking_db)["aliases"] == [("staging", 1)], "staged, nobody promoted yet"

    # The pipeline has EDIT on the model (it registers versions): MLflow alone would let it move the alias.
    answer = api(
        auth_server,
        "POST",
        "registered-models/alias",
        pipeline,
        json={"name": MODEL, "alias": "production", "version": "1"},
    )
    assert answer.status_code == 403, answer.text
    assert answer.text == (
        f"Permission denied [production-needs-manage]: moving the alias 'production' of registered model "
        f"{MODEL!r} needs MANAGE on it (the promoter's grant); user {pipeline.name!r} has EDIT"
    )
    answer = api(
        auth_server,
        "POST",
        "model-versions/transition-stage",
        pipeline,
        json={"name": MODEL, "version": "1", "stage": "Production", "archive_existing_versions": True},
    )
    assert answer.status_code == 403 and "version 1 to stage 'Production' of registered model" in answer.text
    # Other aliases stay the pipeline's (register puts new versions on `staging`).
    answer = api(
        auth_server,
        "POST",
        "registered-models/alias",
        pipeline,
        json={"name": MODEL, "alias": "staging", "version": "1"},
    )
    assert answer.status_code == 200, answer.text

    # promote as the pipeline: the checks run, then the server refuses its record (acceptance.* tags
    # are the promoter's) or its move, naming the grant; none of it is written, Production does not move.
    load = ("--users", "1", "--spawn-rate", "1", "--duration", "2s", "--p95-ms", "10000")
    done, _ = step("promote", auth_server.env(pipeline), "--model-name", MODEL, "--promote", "force", *load)
    assert done.returncode != 0
    refusal = f"of registered model {MODEL!r} needs MANAGE on it (the promoter's grant)"
    assert refusal in done.stderr and f"user {pipeline.name!r} has EDIT" in done.stderr, done.stderr[-3000:]
    state = registry_state(auth_server.tracking_db)
    assert state["versions"] == [(1, "Staging")] and state["aliases"] == [("staging", 1)], state
    assert trusted_tags(auth_server.tracking_db) == {"versions": [], "model": []}, "no acceptance.*/promotion.* tag"

    # The promoter cannot move production to a version that has not passed the acceptance checks: not
    # by the alias, not by the stage, not by the UI's ajax-api routes; not the admin either.
    alias = {"name": MODEL, "alias": "production", "version": "1"}
    stage = {"name": MODEL, "version": "1", "stage": "Production", "archive_existing_versions": True}
    to_alias, to_stage = "the alias 'production' cannot name it", "it cannot move to stage 'Production'"
    for user, prefix, path, body, move in (
        (promoter, "api", "registered-models/alias", alias, to_alias),
        (promoter, "ajax-api", "registered-models/alias", alias, to_alias),
        (promoter, "api", "model-versions/transition-stage", stage, to_stage),
        (promoter, "ajax-api", "model-versions/transition-stage", stage, to_stage),
        (auth_server.admin, "api", "registered-models/alias", alias, to_alias),
    ):
        answer = api(auth_server, "POST", path, user, prefix=prefix, json=body)
        assert answer.status_code == 400, (user.name, prefix, path, answer.text)
        assert answer.json()["message"] == not_accepted("1", "is missing", move), answer.text
    for key, value in promoter.env.items():
        monkeypatch.setenv(key, value)
    client = mlflow.MlflowClient(auth_server.url)
    with pytest.raises(MlflowException, match=r"run `make promote VERSION=1`"):
        client.set_registered_model_alias(MODEL, "production", "1")  # what promote, rollback and the CLI call
    client.set_model_version_tag(MODEL, "1", "acceptance.verdict", "failed: smoke")
    answer = api(auth_server, "POST", "registered-models/alias", promoter, json=alias)
    assert answer.json()["message"] == not_accepted("1", "is 'failed: smoke'", to_alias), answer.text
    state = registry_state(auth_server.tracking_db)
    assert state["versions"] == [(1, "Staging")] and state["aliases"] == [("staging", 1)], state

    # `promote` as the promoter: the checks pass, it writes the verdict and the digest itself, then the
    # server lets the alias and the stage move.
    accept = ("--promote", "force", "--users", "1", "--spawn-rate", "1", "--duration", "5s", "--p95-ms", "10000")
    done, _ = step("promote", auth_server.env(promoter), "--model-name", MODEL, "--version", "1", *accept)
    assert done.returncode == 0, done.stderr[-3000:]
    tags = client.get_model_version(MODEL, "1").tags
    assert tags["acceptance.verdict"] == "passed", tags
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", tags["acceptance.artifact_digest"]), tags
    state = registry_state(auth_server.tracking_db)
    assert state["versions"] == [(1, "Production")] and ("production", 1) in state["aliases"], state

    # ... and the pipeline can neither take it away nor archive it.
    answer = api(
        auth_server, "DELETE", "registered-models/alias", pipeline, json={"name": MODEL, "alias": "production"}
    )
    assert answer.status_code == 403 and "moving the alias 'production'" in answer.text, answer.text
    answer = api(
        auth_server,
        "POST",
        "model-versions/transition-stage",
        pipeline,
        json={"name": MODEL, "version": "1", "stage": "Archived", "archive_existing_versions": False},
    )
    assert answer.status_code == 403 and "version 1 out of stage 'Production'" in answer.text, answer.text
    assert registry_state(auth_server.tracking_db) == state, "Production unchanged"


def protected(what: str, name: str, user: User) -> str:
    """The server's answer to a non-admin creating, renaming or deleting (versions of) a protected model."""
    return (
        f"Permission denied [protected-model]: {what} is the admin's only: {name!r} is a protected model "
        f"(SKYPROPHET_PROTECTED_MODELS: {MODEL}); user {user.name!r} is not an admin"
    )


def test_nobody_but_the_admin_renames_deletes_or_recreates_the_protected_model(auth_server, pipeline_run):
    assert pipeline_run.returncode == 0, pipeline_run.stderr[-2000:]
    pipeline, promoter, admin = auth_server.pipeline, auth_server.promoter, auth_server.admin
    before = registry_state(auth_server.tracking_db)
    assert MODEL in [name for (name,) in before["models"]] and before["versions"], before

    # Rename flight-delay away (then create a new one, whose creator would get MANAGE): refused, in
    # both spellings MLflow's parser accepts, on both prefixes, to the pipeline and to the promoter.
    for user in (pipeline, promoter):
        for prefix, body in (("api", {"new_name": "mine"}), ("ajax-api", {"newName": "mine"})):
            answer = api(auth_server, "POST", "registered-models/rename", user, prefix, json={"name": MODEL, **body})
            assert (answer.status_code, answer.text) == (
                403,
                protected(f"renaming registered model {MODEL!r} to 'mine'", MODEL, user),
            )
        answer = api(auth_server, "DELETE", "registered-models/delete", user, json={"name": MODEL})
        assert (answer.status_code, answer.text) == (
            403,
            protected(f"deleting registered model {MODEL!r}", MODEL, user),
        )
        answer = api(auth_server, "DELETE", "model-versions/delete", user, json={"name": MODEL, "version": "1"})
        what = f"deleting version 1 of registered model {MODEL!r}"
        assert (answer.status_code, answer.text) == (403, protected(what, MODEL, user))

    # A model of its own is the pipeline's (MLflow lets any user create one), but not renamed onto the name.
    shadow = f"{MODEL}-shadow"
    assert api(auth_server, "POST", "registered-models/create", pipeline, json={"name": shadow}).status_code == 200
    for new_name in (MODEL, MODEL.upper()):
        answer = api(
            auth_server, "POST", "registered-models/rename", pipeline, json={"name": shadow, "new_name": new_name}
        )
        what = f"renaming registered model {shadow!r} to {new_name!r}"
        assert (answer.status_code, answer.text) == (403, protected(what, new_name, pipeline))
    assert registry_state(auth_server.tracking_db)["models"] == sorted([*before["models"], (shadow,)])

    # Had the name become free (the admin moves the model away for this check), only the admin may
    # create a model under it: `make auth-roles` creates it as the admin.
    moved = f"{MODEL}-moved"
    answer = api(auth_server, "POST", "registered-models/rename", admin, json={"name": MODEL, "new_name": moved})
    assert answer.status_code == 200, answer.text
    try:
        for user in (pipeline, promoter):
            answer = api(auth_server, "POST", "registered-models/create", user, json={"name": MODEL})
            assert (answer.status_code, answer.text) == (
                403,
                protected(f"creating registered model {MODEL!r}", MODEL, user),
            )
        names = [name for (name,) in registry_state(auth_server.tracking_db)["models"]]
        assert MODEL not in names and moved in names, names
    finally:
        answer = api(auth_server, "POST", "registered-models/rename", admin, json={"name": moved, "new_name": MODEL})
        assert answer.status_code == 200, answer.text
    assert api(auth_server, "DELETE", "registered-models/delete", admin, json={"name": shadow}).status_code == 200
    assert registry_state(auth_server.tracking_db) == before, "nothing renamed, deleted or created"


def test_only_the_promoter_writes_the_tags_promotion_and_readers_trust(auth_server, pipeline_run):
    assert pipeline_run.returncode == 0, pipeline_run.stderr[-2000:]
    pipeline, promoter = auth_server.pipeline, auth_server.promoter
    before, tags_before = registry_state(auth_server.tracking_db), trusted_tags(auth_server.tracking_db)
    why = "acceptance.* and promotion.* tags are the promoter's record"

    def refused(what: str) -> str:
        return (
            f"Permission denied [trusted-tags]: {what} of registered model {MODEL!r} needs MANAGE on it "
            f"(the promoter's grant): {why}; user {pipeline.name!r} has EDIT"
        )

    def without_value(body: dict) -> dict:
        return {k: v for k, v in body.items() if k != "value"}

    verdict = {"name": MODEL, "version": "1", "key": "acceptance.verdict", "value": "passed"}
    history = {"name": MODEL, "key": "promotion.history", "value": "1"}
    for method, path, body, what in (
        ("POST", "model-versions/set-tag", verdict, "setting the tag 'acceptance.verdict' of version 1"),
        (
            "POST",
            "model-versions/set-tag",
            {**verdict, "key": "Acceptance.Digest"},
            "setting the tag 'Acceptance.Digest' of version 1",
        ),
        (
            "DELETE",
            "model-versions/delete-tag",
            without_value(verdict),
            "deleting the tag 'acceptance.verdict' of version 1",
        ),
        ("POST", "registered-models/set-tag", history, "setting the tag 'promotion.history'"),
        ("DELETE", "registered-models/delete-tag", without_value(history), "deleting the tag 'promotion.history'"),
    ):
        for prefix in ("api", "ajax-api"):
            answer = api(auth_server, method, path, pipeline, prefix, json=body)
            assert (answer.status_code, answer.text) == (403, refused(what)), (prefix, path)

    # Nor a new version born with them (it would be "accepted" without a check).
    source = rows(auth_server.tracking_db, "select source, run_id from model_versions where name = %s", MODEL)[0]
    model_id = source[0].removeprefix("models:/")
    tagged = {"name": MODEL, "source": source[0], "run_id": source[1], "model_id": model_id, "tags": [verdict]}
    answer = api(auth_server, "POST", "model-versions/create", pipeline, json=tagged)
    assert (answer.status_code, answer.text) == (403, refused("creating a version with the tags acceptance.verdict"))
    assert registry_state(auth_server.tracking_db) == before and trusted_tags(auth_server.tracking_db) == tags_before

    # gate.* stays the pipeline's (register writes it); the promoter writes promotion.* tags.
    gate = {"name": MODEL, "version": "1", "key": "gate.note", "value": "written by the pipeline"}
    assert api(auth_server, "POST", "model-versions/set-tag", pipeline, json=gate).status_code == 200
    note = {"name": MODEL, "key": "promotion.note", "value": "written by the promoter"}
    assert api(auth_server, "POST", "registered-models/set-tag", promoter, json=note).status_code == 200
    assert ("promotion.note", "written by the promoter") in trusted_tags(auth_server.tracking_db)["model"]
    assert api(auth_server, "DELETE", "registered-models/delete-tag", promoter, json=note).status_code == 200


def test_artifacts_a_version_serves_are_write_once_through_the_proxy(auth_server, pipeline_run):
    assert pipeline_run.returncode == 0, pipeline_run.stderr[-2000:]  # the pipeline logged everything under the rule
    pipeline = auth_server.pipeline
    (source,) = rows(
        auth_server.tracking_db, "select source from model_versions where name = %s and version = 1", MODEL
    )[0]
    model_id = source.removeprefix("models:/")
    (location,) = rows(
        auth_server.tracking_db, "select artifact_location from logged_models where model_id = %s", model_id
    )[0]
    folder = location.removeprefix("mlflow-artifacts:").lstrip("/")
    mlmodel = auth_server.root / "artifacts" / folder / "MLmodel"
    original = mlmodel.read_bytes()

    def proxy(method: str, prefix: str, path: str, **kwargs) -> requests.Response:
        url = f"{auth_server.url}/{prefix}/2.0/mlflow-artifacts/artifacts/{folder}/{path}"
        return requests.request(method, url, auth=(pipeline.name, pipeline.password), timeout=30, **kwargs)

    for prefix in ("api", "ajax-api"):
        answer = proxy("PUT", prefix, "MLmodel", data=b"loader_module: evil\n")
        assert answer.status_code == 409, answer.text
        assert answer.text.startswith(
            f"Conflict [write-once-artifacts]: the artifact '{folder}/MLmodel' already exists"
        )
        answer = proxy("DELETE", prefix, "MLmodel")
        assert answer.status_code == 403, answer.text
        assert answer.text.startswith(
            f"Permission denied [write-once-artifacts]: deleting the artifact '{folder}/MLmodel'"
        )
        for extra in ("code/xgboost.py", "./code//pandas.py"):  # a new module beside the model's code
            answer = proxy("PUT", prefix, extra, data=b"import os\n")
            assert answer.status_code == 409, answer.text
            assert f"[write-once-artifacts]: logged model {model_id} is finalized (READY)" in answer.text
    answer = requests.post(
        f"{auth_server.url}/api/2.0/mlflow-artifacts/mpu/create/{folder}/MLmodel",
        json={"path": f"{folder}/MLmodel", "num_parts": 1},
        auth=(pipeline.name, pipeline.password),
        timeout=30,
    )
    assert answer.status_code == 409 and "[write-once-artifacts]" in answer.text, answer.text
    assert mlmodel.read_bytes() == original, "MLmodel unchanged"
    assert (
        not (mlmodel.parent / "code" / "xgboost.py").exists() and not (mlmodel.parent / "code" / "pandas.py").exists()
    )
