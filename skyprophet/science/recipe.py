"""The recipe: how a model is fitted (train's parameters but its input), and reading it back from a run."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, fields

import mlflow

from pyfunc.features import resolve_country
from skyprophet import config
from skyprophet.science.splits import CALIBRATIONS

# What the booster is fitted to (train's ``objective``); calibration turns either into P(delay).
#   minutes_late: squared error on minutes late, early flights as 0 and capped at twice the delay
#     line. A flight 14 minutes late teaches nearly what one 16 minutes late does, where the 0/1
#     label calls them opposites: day-grouped CV ROC / PR AUC 0.709 / 0.370 -> 0.712 / 0.377 on SCL.
#   delayed: logistic loss on the 0/1 label, the positive class weighted by ``scale_pos_weight``.
OBJECTIVES = ("minutes_late", "delayed")
# train's parameters that are not the recipe: where its flights come from.
INPUTS = ("processed_uri",)
_TRAIN = config.DEFAULTS["train"]


def check_objective(objective: str) -> None:
    """Refuse an ``objective`` train does not know, naming the ones it does."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")


@dataclass(frozen=True)
class Recipe:
    """How a model is fitted: train's parameters but its input, defaulted from ``config.DEFAULTS["train"]``.

    Built with ``Recipe.of``/``replace``, which refuse a key that is not a parameter, naming it
    (a misspelt key would otherwise fit today's default without a word). ``scale_pos_weight`` is
    None where the objective ignores it (``effective``). The fields are typed here; their
    defaults are ``config.DEFAULTS["train"]``'s, and the import fails if the two name different parameters.
    """

    country: str = _TRAIN["country"]
    objective: str = _TRAIN["objective"]
    calibration: str = _TRAIN["calibration"]
    n_estimators: int = _TRAIN["n_estimators"]
    learning_rate: float = _TRAIN["learning_rate"]
    max_depth: int = _TRAIN["max_depth"]
    min_child_weight: float = _TRAIN["min_child_weight"]
    subsample: float = _TRAIN["subsample"]
    colsample_bytree: float = _TRAIN["colsample_bytree"]
    scale_pos_weight: float | None = _TRAIN["scale_pos_weight"]
    cv_folds: int = _TRAIN["cv_folds"]
    seed: int = _TRAIN["seed"]

    @classmethod
    def of(cls, values: Mapping[str, object] | None = None, **changes: object) -> Recipe:
        """Today's defaults with ``values`` and ``changes``; an unknown key is a ValueError naming it."""
        return cls().replace(**{**(values or {}), **changes})

    def replace(self, **changes: object) -> Recipe:
        """The recipe with ``changes``; an unknown key is a ValueError naming it and the known ones."""
        known = [f.name for f in fields(self)]
        if unknown := sorted(set(changes) - set(known)):
            raise ValueError(f"not a recipe parameter: {', '.join(unknown)} (the parameters: {', '.join(known)})")
        return dataclasses.replace(self, **changes)

    def params(self) -> dict[str, object]:
        """The recipe as MLflow parameters (what ``recipe_of`` reads back)."""
        return dataclasses.asdict(self)

    def check(self) -> None:
        """Refuse an unknown ``objective``, ``calibration`` or ``country`` before any run starts (train and main)."""
        check_objective(self.objective)
        if self.calibration not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {', '.join(CALIBRATIONS)}, got {self.calibration!r}")
        resolve_country(self.country, None)

    def effective(self) -> Recipe:
        """The recipe with what its objective ignores set to None (``scale_pos_weight`` unless ``delayed``).

        So a search does not fit the same recipe twice, and its table shows no value that did nothing.
        """
        return dataclasses.replace(
            self, scale_pos_weight=self.scale_pos_weight if self.objective == "delayed" else None
        )


if [f.name for f in fields(Recipe)] != [k for k in _TRAIN if k not in INPUTS]:
    raise ImportError("Recipe's fields and config.DEFAULTS['train'] (but its inputs) name different parameters")


# What train did before these parameters existed (runs of then did not log them).
HYPER_BEFORE_IT_EXISTED = {"objective": "delayed", "country": "none", "calibration": "days"}


def recipe_of(run: mlflow.entities.Run) -> Recipe:
    """The hyper-parameters a train run used (so evaluate and the gate refit the same recipe).

    A parameter the run did not log takes the value train used before it existed, not today's
    default: a version trained before ``objective`` existed was a logistic classifier.
    """
    # What the step resolved wins over what `mlflow run` logged: it logs an empty -P value as "''".
    resolved = {k.removeprefix("resolved."): v for k, v in run.data.tags.items() if k.startswith("resolved.")}
    params = {**run.data.params, **resolved}
    recipe = {**Recipe().params(), **HYPER_BEFORE_IT_EXISTED}

    def typed(value: str, default: object) -> object:
        return value if isinstance(default, str) else type(default)(float(value))

    return Recipe.of({k: typed(params[k], default) if k in params else default for k, default in recipe.items()})
