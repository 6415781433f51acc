"""main: etl -> train -> register, each as its own MLflow run, handing URIs from one to the next.

Like ``mlflow/mlflow`` ``examples/multistep_workflow``: each step is launched with
``mlflow.projects.run`` on this project, and the next step receives the previous run's
artifact URIs (``runs:/<etl>/processed``, the train run's ``models:/…``), never a local path.
"""

from __future__ import annotations

import argparse
import logging

import mlflow
import mlflow.projects

from steps import config, tracking
from steps.train import HYPER_DEFAULTS, MODEL_URI_TAG, check_recipe

logger = logging.getLogger("skyprophet.main")


def run_step(entry_point: str, parameters: dict) -> mlflow.entities.Run:
    """Run one entry point of this project synchronously and return its finished run."""
    submitted = mlflow.projects.run(
        str(config.PROJECT_ROOT),
        entry_point=entry_point,
        parameters={k: str(v) for k, v in parameters.items()},
        env_manager="local",
        experiment_id=mlflow.active_run().info.experiment_id,
        synchronous=True,
    )
    return mlflow.MlflowClient().get_run(submitted.run_id)


def run(etl_params: dict, train_params: dict, register_params: dict) -> dict[str, str]:
    """Chain the three steps and record their run ids on the main run."""
    check_recipe({**HYPER_DEFAULTS, **train_params})  # before etl runs, not after
    with tracking.step_run("main"):
        etl_run = run_step("etl", etl_params)
        processed_uri = f"runs:/{etl_run.info.run_id}/processed"
        train_run = run_step("train", {**train_params, "processed_uri": processed_uri})
        model_uri = train_run.data.tags[MODEL_URI_TAG]
        register_run = run_step(
            "register",
            {**register_params, "model_uri": model_uri, "holdout_uri": f"{processed_uri}/holdout.parquet"},
        )
        ids = {
            "etl_run_id": etl_run.info.run_id,
            "train_run_id": train_run.info.run_id,
            "register_run_id": register_run.info.run_id,
            "model_uri": model_uri,
            "registered_version": register_run.data.tags.get("registered_version", ""),
            "promoted": register_run.data.tags.get("promoted", ""),
        }
        mlflow.set_tags({f"skyprophet.{k}": v for k, v in ids.items()})
    return ids


def main() -> None:
    """CLI: every parameter of etl, train and register, with the same defaults."""
    parser = argparse.ArgumentParser(description=__doc__)
    groups = {}
    for step in ("etl", "train", "register"):
        for name, default in config.DEFAULTS[step].items():
            if (step, name) in (("train", "processed_uri"), ("register", "model_uri"), ("register", "holdout_uri")):
                continue  # handed over by main itself
            parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
            groups[name] = step
    args = vars(parser.parse_args())
    params = {step: {k: v for k, v in args.items() if groups[k] == step} for step in ("etl", "train", "register")}
    tracking.setup_logging()
    ids = run(params["etl"], params["train"], params["register"])
    logger.info("done: %s", ids)


if __name__ == "__main__":
    main()
