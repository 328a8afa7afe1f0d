"""ssl_imagenet_splits: reproducible semi-supervised ImageNet splits.

The DAG wires tasks together, in the order a run's data flows: check params,
lock the output folder, validate the source (Beam), plan, build each split
(Beam, mapped), verify each split (mapped), publish the manifest, release the
lock. Each Python task is one call into ``ssl_splits.steps`` with its context;
the Beam tasks are the provider's operator (``ssl_splits.operators.beam_task``);
the jobs themselves are ``beam_jobs``. Nothing heavy happens at parse time.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

# The DAG processor imports the airflow.* modules a DAG file names once, before it
# forks a parser per file (parsing_pre_import_modules): naming the Beam operator here
# keeps the provider's heavy imports (Google Dataflow hooks) out of every parse.
from airflow.providers.apache.beam.operators.beam import BeamRunPythonPipelineOperator  # noqa: F401
from airflow.sdk import DAG, Asset, get_current_context, task
from ssl_splits.form import params, schedule
from ssl_splits.operators import beam_task

MANIFEST_ASSET = Asset("ssl_imagenet_splits_manifest")

DOC_MD = """
### Reproducible semi-supervised ImageNet splits

From ImageNet `train-*` TFRecords (`source_uri`; or as TensorFlow Datasets
prepared it, `imagenet2012-train.tfrecord-*`), builds five seeded,
class-stratified 10% labelled splits `train{N}.{seed}` and the full reshuffle
`train` as sharded TFRecords under `output_uri`, copies `validation-*` beside
them, verifies every shard, and publishes a manifest (`manifest_uri`, default
`{output_uri}/manifest.json`), the single commit point training jobs read.

**Tasks**: `check_params` (params as a whole, source fingerprint) ->
`acquire_lock` (setup: one run at a time per output folder) ->
`validate_source` (Beam: every record's CRCs and features; writes the catalog,
skipped when this exact source was validated before) -> `plan` (which record
goes where; or a published FixMatch file, exactly) -> `build` (Beam, one task
per split, into staging) -> `verify` (per split: exact sizes and CRC32Cs from
the catalog; `deep_verify: always` re-reads every record) -> `publish_manifest`
(verified shards take their names, then the manifest commits; only the splits
built in this run) ->
`release_lock` (teardown: frees the output folder, whatever happened).

**Common runs**
* everything: `{"source_uri": "gs://b/imagenet", "output_uri": "gs://b/ssl"}`
* rebuild seed 3 only: add `"seeds": [3], "unsupervised": false`
* everything FixMatch's trainer reads (10%, 5%, 1% for each seed): `"fractions": [0.1, 0.05, 0.01]`
* FixMatch's five published splits (built in): `"protocol": "fixmatch"`
* SimCLR's 1% and 10% subsets (built in): `"protocol": "simclr"`
* a published file of your own: `"seeds": [3], "sharding_files": {"3": "gs://.../files2shards_train_size128116_split3.txt"}`
* a list of file names as a split: `"name_lists": {"mysubset": "gs://.../names.txt"}`
* on Dataflow: `"runner": "DataflowRunner"` with the `dataflow_*` params; add
  `"dataflow_template_location": "gs://..."` to only stage the jobs' Dataflow
  templates there (nothing runs, nothing is published).

Rerunning with the same params skips splits whose verified files already match
their plan (unless `force`). See the README for the split algorithm.
"""

with DAG(
    dag_id="ssl_imagenet_splits",
    description="Seeded, stratified ImageNet splits for semi-supervised learning, verified "
    "and published with a manifest",
    doc_md=DOC_MD,
    schedule=schedule(),  # SSL_SPLITS_SCHEDULE, with SSL_SPLITS_SOURCE_URI and _OUTPUT_URI
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,  # runs queue: two runs never write one output folder at once
    params=params(),
    tags=["ssl", "imagenet", "beam", "datasets"],
    default_args={"retries": 1, "retry_delay": timedelta(minutes=1), "owner": "data-platform"},
) as dag:

    @task(multiple_outputs=True)
    def check_params() -> dict:
        """Check the params as a whole and describe the source (no data read)."""
        from ssl_splits import steps

        return steps.check_params(get_current_context())

    @task(retries=0)
    def acquire_lock(config: dict) -> dict:
        """Setup: one run at a time writes an output folder (fails, naming the holder);
        returns the lease (a token) the run's other tasks hold the lock with."""
        from ssl_splits import steps

        return steps.acquire_lock(get_current_context(), config)

    @task(retries=0)
    def plan(config: dict, source: dict) -> list[dict]:
        """Plan every requested split; decide which to build."""
        from ssl_splits import steps

        return steps.plan(get_current_context(), config, source)

    @task(
        trigger_rule="none_failed",
        execution_timeout=timedelta(hours=6),
        map_index_template="{{ split }}",
    )
    def verify(config: dict, spec: dict) -> dict:
        """Check one split's staged build against its plan (exact, from metadata;
        deep_verify: always also re-reads every record with Beam)."""
        from ssl_splits import steps

        return steps.verify(get_current_context(), config, spec)

    @task(outlets=[MANIFEST_ASSET], trigger_rule="none_failed", retries=3)
    def publish_manifest(config: dict, source: dict, specs: list[dict]) -> dict:
        """Publish the verified splits' entries to the manifest."""
        from ssl_splits import steps

        return steps.publish_manifest(get_current_context(), config, source, specs, MANIFEST_ASSET)

    @task(retries=2)
    def release_lock() -> bool:
        """Teardown: free the output folder for the next run, whatever happened."""
        from ssl_splits import steps

        return steps.release_lock(get_current_context())

    checked = check_params()
    config, source = checked["config"], checked["source"]
    locked = acquire_lock(config).as_setup()
    validated = beam_task(
        "validate",
        task_id="validate_source",
        config=config,
        spec=source,
        execution_timeout=timedelta(hours=6),
    )
    specs = plan(config, source)
    built = beam_task(
        "build",
        task_id="build",
        config=config,
        specs=specs,
        max_active_tis_per_dagrun=int(os.environ.get("SSL_SPLITS_MAX_PARALLEL_BUILDS") or "3"),
        execution_timeout=timedelta(hours=12),
    )
    verified = verify.partial(config=config).expand(spec=specs)
    published = publish_manifest(config, source, specs)
    locked >> validated >> specs
    built >> verified >> published >> release_lock().as_teardown(setups=locked)
