# SkyProphet images besides the model itself (the model image comes from
# `mlflow models build-docker`, see `make image`). One file, three targets:
#   sidecar       (default, last)  /ping + /health beside the model server       make image
#   tracking                        mlflow server on PostgreSQL + GCS             docker compose
#   gcs-emulator                    gcp-storage-emulator standing in for GCS       docker compose
#   model                           MLflow's model image with the ingress in front  make image
# Versions are pinned and match requirements.txt / requirements-dev.txt.
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm
# What `mlflow models build-docker` built (make image); the `model` stage puts the ingress in front.
ARG MODEL_BASE_IMAGE=skyprophet-model

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --gid 10001 app && useradd --uid 10001 --gid app --no-create-home --shell /usr/sbin/nologin app
WORKDIR /app

FROM base AS gcs-emulator
RUN pip install gcp-storage-emulator==2026.7.19
USER 10001
EXPOSE 9023
CMD ["gcp-storage-emulator", "start", "--host", "0.0.0.0", "--port", "9023", "--default-bucket", "skyprophet-artifacts", "--in-memory"]

FROM base AS tracking
RUN pip install mlflow==3.17.2 Flask-WTF==1.3.0 WTForms==3.3.2 psycopg2-binary==2.9.13 google-cloud-storage==3.17.1
USER 10001
EXPOSE 5000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/health', timeout=2)"]
# The command (store URIs) is set by docker-compose.yml.
CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000"]

# The model image: MLflow's own (build-docker) with the ingress (ingress/limits.py) on 8080, limits
# checked before MLflow parses a body. nginx off; MLflow's entrypoint serves on 127.0.0.1:8000 behind
# the ingress, as its child in its own process group, stopped whole within 10 s when the ingress stops.
# The ingress needs only what MLflow's image installs (uvicorn, aiohttp, pyarrow).
# It runs as uid 10001 (build-docker's image runs as root; nginx, which needs root, is off).
FROM ${MODEL_BASE_IMAGE} AS model
RUN groupadd --gid 10001 app && useradd --uid 10001 --gid app --no-create-home --shell /usr/sbin/nologin app
COPY ingress/ /opt/skyprophet/ingress/
ENV PYTHONPATH=/opt/skyprophet \
    DISABLE_NGINX=true \
    UVICORN_HOST=127.0.0.1 \
    HOME=/tmp
USER 10001
EXPOSE 8080
ENTRYPOINT ["python", "-m", "ingress.run", "--host", "0.0.0.0", "--port", "8080", "--upstream", "http://127.0.0.1:8000", "--", "python", "-c", "from mlflow.models import container as C; C._serve('local')"]

FROM base AS sidecar
# mlflow-skinny: the registry client without pandas/numpy/SQLAlchemy (the sidecar talks to an
# HTTP tracking server); google-cloud-storage for gs:// artifacts not proxied by the server.
RUN pip install mlflow-skinny==3.17.2 requests==2.34.2 google-cloud-storage==3.17.1
COPY sidecar/ /app/sidecar/
# The artifact digest check (stdlib + the registry client only).
COPY skyprophet/__init__.py /app/skyprophet/
COPY skyprophet/mlops/__init__.py skyprophet/mlops/digest.py /app/skyprophet/mlops/
USER 10001
ENV SIDECAR_HOST=0.0.0.0 \
    SIDECAR_PORT=8081 \
    MODEL_SERVER_URL=http://127.0.0.1:8080 \
    MODEL_URI=models:/flight-delay@production
EXPOSE 8081
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('SIDECAR_PORT', '8081') + '/ping', timeout=2)"]
CMD ["python", "-m", "sidecar.app"]
