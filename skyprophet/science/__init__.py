"""The training science: recipe, splits, fitting and calibration, baselines, metrics."""
