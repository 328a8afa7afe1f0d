# The compose stack's local GCS (service gcs-emulator in docker-compose.yaml):
# gcp-storage-emulator, pinned with hashes to the version in requirements.lock
# (docker/gcs-emulator.lock), run by docker/gcs_emulator_server.py with the same
# generation-precondition patch as the tests' emulator (tests/support/gcs_emulator.py).
# Build context: the repository root.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GCS_EMULATOR_LISTEN=0.0.0.0 \
    GCS_EMULATOR_PORT=9023 \
    GCS_EMULATOR_DATA_DIR=/data

COPY docker/gcs-emulator.lock /app/gcs-emulator.lock
RUN pip install --no-cache-dir --require-hashes -r /app/gcs-emulator.lock

COPY tests/support/gcs_emulator.py docker/gcs_emulator_server.py /app/

# An unprivileged user owning the data folder (the named volume inherits it).
RUN useradd --system --uid 10001 --home-dir /data --create-home gcs \
    && chown gcs /data
USER gcs
WORKDIR /data
EXPOSE 9023

HEALTHCHECK --interval=10s --timeout=5s --retries=5 --start-period=5s \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/storage/v1/b' % os.environ['GCS_EMULATOR_PORT'], timeout=4)"]

CMD ["python", "/app/gcs_emulator_server.py"]
