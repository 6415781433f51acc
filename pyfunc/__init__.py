"""The served model: flight schema, feature engineering and the MLflow pyfunc that wraps them."""
