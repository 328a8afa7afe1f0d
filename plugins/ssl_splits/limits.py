"""The params' defaults, bounds and patterns, and the error that names a bad one.

What the trigger form (``ssl_splits.form``) shows and checks by JSON schema and
what :func:`ssl_splits.config.resolve_conf` enforces, written once, below both:
the form's field table and the resolver each import this module, and the
resolver imports the form's type check (``form.wrong_type``), never the other
way round.
"""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowFailException

from beam_jobs import defaults

# gs://bucket/any/path, or an absolute local path; no ".." components.
URI_PATTERN = r"^(gs://[a-z0-9][-a-z0-9_.]{1,220}[a-z0-9](/.*)?|/.*)$"
DOTDOT_PATTERN = r"(^|/)\.\.(/|$)"
MAX_SEED = 1_000_000
# A seed as the trigger form's text box sends it: digits, spaces around them; a blank
# line (a trailing newline) is allowed and ignored.
SEED_LINE_PATTERN = r"^\s*([0-9]{1,7})?\s*$"
# A fraction as the form's text box sends it (one per line): a decimal, spaces around it;
# blank lines are ignored. Its range, (0, 1], is checked by resolve().
FRACTION_LINE_PATTERN = r"^\s*([0-9]{0,3}(\.[0-9]{0,15})?)\s*$"
MAX_FRACTIONS = 10
# Bounds of the other lists a user passes (the form's maxItems/maxProperties say the
# same): one sharding file per seed at most, and a few name lists.
MAX_SEEDS = 100
MAX_SHARDING_FILES = MAX_SEEDS
MAX_NAME_LISTS = 20
# A URI's length (GCS object names are at most 1,024 bytes; Linux paths 4,096).
MAX_URI_LENGTH = 2048
DEFAULT_NUM_CLASSES = 1000
RUNNERS = ["DirectRunner", "DataflowRunner"]
SAMPLINGS = list(defaults.SAMPLINGS)
# Dataflow settings not given in the params (the form shows them as its defaults).
DATAFLOW_REGION = "us-central1"
DATAFLOW_MACHINE_TYPE = "n2-standard-4"
DATAFLOW_MAX_WORKERS = 20
# Every split is verified exactly from metadata (sizes and CRC32Cs predicted
# from the plan and the catalog); "always" adds a Beam job that re-reads every
# record. "never" is kept for confs written before the exact check existed.
DEEP_VERIFY = {"auto": False, "always": True, "never": False}


class ConfigError(AirflowFailException, ValueError):
    """A param or a combination of params is not acceptable; says which and why.

    An AirflowFailException: the task fails at once, without retries (the same
    params would fail again)."""
