"""The original deployment, kept only as the serving benchmark's baseline: Flask under gunicorn.

Per request it does what the original service did: parse the JSON body, build a DataFrame of the
model's inputs, call the pipeline's ``predict_proba`` and answer the probability. There is no
validation (a bad body is a 500), which only makes it cheaper than the real app. Run as

    MLFLOW_TRACKING_URI=... gunicorn -w 2 -b 127.0.0.1:8101 \\
        'bank_marketing.benchmarks.flask_baseline:create_app(version="3")'

It answers in the same shape as the real service, for one record or ``{"records": [...]}``.
"""

from __future__ import annotations

import mlflow
import pandas as pd
from flask import Flask, jsonify, request

from bank_marketing.training.tracking import MODEL_NAME

THRESHOLD = 0.5


def create_app(version: str) -> Flask:
    """The Flask app over ``version`` of the registered model (the tracking URI from the env)."""
    uri = f"models:/{MODEL_NAME}/{version}"
    pipeline = mlflow.sklearn.load_model(uri)
    inputs = mlflow.models.get_model_info(uri).signature.inputs.input_names()
    app = Flask("bank_marketing_baseline")

    @app.get("/healthz")
    def healthz() -> tuple[dict[str, str], int]:
        return {"status": "ok", "model_version": version}, 200

    @app.post("/predict")
    def predict() -> object:
        body = request.get_json()
        records = body.get("records", [body])
        frame = pd.DataFrame(records, columns=inputs)
        probabilities = pipeline.predict_proba(frame)[:, 1]
        return jsonify(
            model_version=version,
            predictions=[
                {"probability": float(p), "subscribed": bool(p >= THRESHOLD)} for p in probabilities
            ],
        )

    return app
