"""Template mode (``dataflow_template_location``): stage the Dataflow jobs, run nothing.

With ``runner: DataflowRunner`` and ``dataflow_template_location: gs://...``,
each Beam task of the run goes through the usual operator and the Beam
provider's hook to Beam's ``DataflowRunner``, which stages the job (pipeline
proto, pickled main session, the worker package) and writes its description
(a classic template) to ``{dataflow_template_location}/ssl-{job}-{split}``
instead of submitting it. A platform team reviews the descriptions
(``python -m beam_jobs.building.template describe gs://...``) and launches them
(``gcloud dataflow jobs run``).

A staged job produces nothing, so the run must not pretend it did:

* ``validate_source`` stages its template unless this exact source was
  validated before. Without a catalog there is nothing to plan from:
  ``plan`` is skipped (:func:`skip_plan_without_catalog`), and so is
  everything after it. Launch the validation template, then trigger the
  same run again to stage the builds.
* With a catalog, ``plan`` writes the plans and every ``build`` stages its
  template (its record table is staged next to it, under ``_work/staging``).
* ``verify`` is skipped (there are no shards to verify), and
  ``publish_manifest`` is skipped with the list of every template written
  (:func:`skip_publish`): nothing is published and no Asset event is sent.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

from airflow.sdk.exceptions import AirflowSkipException

from ssl_splits.config import RunConfig

log = logging.getLogger(__name__)


def skip_plan_without_catalog(config: dict[str, Any], source: dict[str, Any]) -> None:
    """Skip ``plan`` in template mode when the source's validation was only staged."""
    cfg = RunConfig.from_dict(config)
    if cfg.template_location and source.get("action") != "cached":
        raise AirflowSkipException(
            "template mode: the source's validation was staged as a Dataflow template, not run, "
            f"so there is no catalog of {cfg.source_uri} to plan from yet. Launch the "
            "validate template (see validate_source's log), then trigger this run again with "
            "the same params to stage the builds."
        )


def staged_templates(results: Iterable[dict[str, Any] | None]) -> list[tuple[str, str]]:
    """``(task label, template URI)`` of the Beam tasks' results that staged one."""
    out = []
    for r in results:
        if r and r.get("template_location"):
            out.append((f"{r.get('job')} {r.get('split')}", r["template_location"]))
    return sorted(out)


def skip_publish(config: dict[str, Any], results: Iterable[dict[str, Any] | None]) -> None:
    """In template mode, end the run here: log every template written, publish nothing."""
    cfg = RunConfig.from_dict(config)
    if not cfg.template_location:
        return
    staged = staged_templates(results)
    lines = [f"  {label}: {uri}" for label, uri in staged] or [
        "  (none: every job was skipped or up to date)"
    ]
    message = (
        f"template mode: {len(staged)} Dataflow job description(s) staged under "
        f"{cfg.template_location}, none run; nothing was built, verified or published "
        "(the manifest is unchanged):\n" + "\n".join(lines)
    )
    log.info("%s", message)
    raise AirflowSkipException(message)
