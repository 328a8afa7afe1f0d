"""Airflow-side code of the ssl_imagenet_splits DAG: params and run config,
the Beam operator subclass, the task functions, manifest publishing, GCP
credentials, and the UI plugin. Data-plane logic lives in ``beam_jobs``."""
