# The Airflow image of the compose stack (docker-compose.yaml builds it as
# ssl-imagenet-splits-airflow): the official Airflow image plus this project's
# LOCKED runtime requirements and its data-plane package (beam_jobs).
#
# * The base tag's Airflow version equals the pin in requirements.lock
#   (tests/airflow/test_compose.py checks; change both together).
# * requirements-runtime.lock is requirements.lock minus TensorFlow and the test
#   tools, with every pin equal to the main lock's and every file hashed: pip
#   installs exactly those files (--require-hashes) or fails.
# * beam_jobs is installed without dependencies (they are all in the lock) and
#   without build isolation (its build back end, setuptools, is in the lock too),
#   so nothing unpinned is fetched.
# * No _PIP_ADDITIONAL_REQUIREMENTS: installing at container start is slow and
#   unpinned; a rebuild (docker compose build) is the way to change packages.
# * Kept from the base image: its Postgres driver (psycopg2, asyncpg) and the
#   other providers it ships; none of those are in requirements.lock.
FROM apache/airflow:3.3.2-python3.11

USER root
RUN install -d -o airflow -g 0 -m 0775 /opt/ssl-splits /opt/ssl-splits/src /opt/ssl-splits/docker
# The base image runs pip as the `airflow` user, installing into ~/.local.
USER airflow
ENV PIP_DISABLE_PIP_VERSION_CHECK=1

COPY --chown=airflow:0 requirements-runtime.lock /opt/ssl-splits/requirements-runtime.lock
RUN pip install --no-cache-dir --require-hashes -r /opt/ssl-splits/requirements-runtime.lock

# The data-plane package, from the repo's pyproject.toml. Its source stays in
# /opt/ssl-splits/src for anything that needs to stage it (e.g. a Dataflow
# --setup_file or sdist). The check after it imports no Airflow module (that
# would write an airflow.cfg with generated secrets into the image).
COPY --chown=airflow:0 pyproject.toml /opt/ssl-splits/src/pyproject.toml
COPY --chown=airflow:0 beam_jobs/ /opt/ssl-splits/src/beam_jobs/
RUN pip install --no-cache-dir --no-deps --no-build-isolation /opt/ssl-splits/src \
    && python -c "import importlib.metadata as m, os; \
v = m.version('apache-airflow'); assert v == os.environ['AIRFLOW_VERSION'], v; \
[m.version(d) for d in ('apache-airflow-providers-apache-beam', 'apache-airflow-providers-google')]; \
import apache_beam, beam_jobs.storage"

# Helper scripts run by the compose services (airflow-init, demo-data).
COPY --chown=airflow:0 docker/simple_auth_passwords.py docker/demo_data.py /opt/ssl-splits/docker/
