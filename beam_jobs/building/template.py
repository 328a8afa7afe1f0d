"""Read a staged Dataflow job description (a classic template) back, for review.

Template mode (``--runner=DataflowRunner --template_location=gs://...`` on any
job, or the DAG's ``dataflow_template_location`` param) makes Beam's
DataflowRunner stage a job and write its description instead of submitting
it. :func:`describe` turns such a description into what a reviewer (or a
test) wants to see, without running or unpickling anything:

* the job graph, from the staged ``pipeline.pb`` (a ``beam_runner_api``
  Pipeline proto): every transform's name and URN, composites before their
  parts, in the order Beam applied them (checked to be topological);
* the staged files (the worker package, the pickled main session, ...) and,
  for a staged wheel, its modules and declared requirements;
* the SDK and its container image, and the options that decide where and how
  the job runs (project, region, machine type, max workers, labels, ...).

CLI::

    python -m beam_jobs.building.template describe gs://bucket/templates/ssl-build-train128116-3
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import zipfile
from email.parser import Parser
from typing import Any

from beam_jobs import storage

# The pipeline options a reviewer needs (the rest are Beam's defaults).
OPTIONS = (
    "job_name",
    "project",
    "region",
    "machine_type",
    "max_num_workers",
    "labels",
    "temp_location",
    "staging_location",
    "template_location",
    "extra_packages",
    "sdk_location",
    "save_main_session",
    "experiments",
    "num_workers",
    "autoscaling_algorithm",
    "service_account_email",
    "network",
    "subnetwork",
)


class TemplateError(ValueError):
    """Not a readable Dataflow job description; the message names the file."""


def _gs(location: str) -> str:
    """Dataflow's ``storage.googleapis.com/bucket/path`` -> ``gs://bucket/path``."""
    for prefix in ("https://storage.googleapis.com/", "storage.googleapis.com/"):
        if location.startswith(prefix):
            return "gs://" + location[len(prefix) :]
    return location


def transforms(pipeline_pb: bytes) -> list[dict[str, Any]]:
    """The graph's transforms (``name``, ``urn``, ``depth``; composites before
    their parts) in application order, checked to be a topological order:
    every transform's inputs are made by a transform listed before it."""
    from apache_beam.portability.api import beam_runner_api_pb2

    proto = beam_runner_api_pb2.Pipeline.FromString(pipeline_pb)
    table = proto.components.transforms
    out: list[dict[str, Any]] = []
    made: set[str] = set()

    def walk(tid: str, depth: int) -> None:
        t = table[tid]
        # Beam wraps the whole graph in one root without a URN: not a transform of ours.
        named = bool(t.spec.urn) or not t.subtransforms
        if named:
            missing = [pc for pc in t.inputs.values() if pc not in made]
            if missing and not t.subtransforms:
                raise TemplateError(
                    f"transform {t.unique_name} reads {missing} before any "
                    "transform makes them: not a topological order"
                )
            out.append({"name": t.unique_name, "urn": t.spec.urn, "depth": depth})
        for sub in t.subtransforms:
            walk(sub, depth + (1 if named else 0))
        made.update(t.outputs.values())

    for root in proto.root_transform_ids:
        walk(root, 0)
    return out


def wheel_summary(data: bytes) -> dict[str, Any]:
    """A wheel's top-level modules and its Requires-Dist (read as a zip; nothing imported)."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = z.namelist()
        meta_name = next((n for n in names if n.endswith(".dist-info/METADATA")), None)
        meta = Parser().parsestr(z.read(meta_name).decode()) if meta_name else None
    return {
        "modules": sorted(n for n in names if n.endswith(".py")),
        "requires": sorted(meta.get_all("Requires-Dist") or []) if meta else [],
    }


def describe(template_uri: str) -> dict[str, Any]:
    """What a staged Dataflow job description says, from the description itself
    and the files it points at (see the module docstring)."""
    try:
        tpl = json.loads(storage.read_text(template_uri))
        env = tpl["environment"]
        opts = env["sdkPipelineOptions"]["options"]
        pool = env["workerPools"][0]
    except FileNotFoundError:
        raise TemplateError(f"{template_uri}: no such template") from None
    except (KeyError, IndexError, ValueError) as err:
        raise TemplateError(f"{template_uri}: not a Dataflow job description ({err})") from None
    packages = {p["name"]: _gs(p["location"]) for p in pool.get("packages", [])}
    wheels = {
        name: wheel_summary(storage.read_bytes(loc))
        for name, loc in packages.items()
        if name.endswith(".whl")
    }
    sdk_images = sorted({i["containerImage"] for i in pool.get("sdkHarnessContainerImages", [])})
    return {
        "template_location": template_uri,
        "name": tpl.get("name"),
        "type": tpl.get("type"),
        "sdk": {
            "name": env.get("userAgent", {}).get("name"),
            "version": env.get("userAgent", {}).get("version"),
        },
        "container_images": sorted({pool.get("workerHarnessContainerImage"), *sdk_images} - {None}),
        # One SDK process per vCPU (Python: each process uses one core, the GIL's).
        "single_core_per_container": all(
            i.get("useSingleCorePerContainer", False)
            for i in pool.get("sdkHarnessContainerImages", [])
        ),
        "machine_type": pool.get("machineType"),
        "max_workers": (pool.get("autoscalingSettings") or {}).get("maxNumWorkers"),
        "labels": tpl.get("labels") or {},
        "options": {k: opts[k] for k in OPTIONS if k in opts},
        "staged_files": packages,
        "wheels": wheels,
        "pipeline_url": opts.get("pipelineUrl"),
        "transforms": transforms(storage.read_bytes(opts["pipelineUrl"])),
    }


def format_description(d: dict[str, Any]) -> str:
    """A human-readable summary of :func:`describe`'s result."""
    lines = [
        f"{d['template_location']}: Dataflow {d['type']} job {d['name']}",
        f"  SDK: {d['sdk']['name']} {d['sdk']['version']}; container: "
        f"{', '.join(d['container_images'])}",
        f"  workers: {d['machine_type'] or 'default machine type'}, at most "
        f"{d['max_workers'] or 'the default number of'} workers; labels: "
        f"{json.dumps(d['labels'], sort_keys=True)}",
        "  options: " + json.dumps(d["options"], sort_keys=True),
        "  staged files:",
    ]
    lines += [f"    {name}  ({loc})" for name, loc in sorted(d["staged_files"].items())]
    for name, w in sorted(d["wheels"].items()):
        lines.append(f"  {name}: {len(w['modules'])} modules; requires {', '.join(w['requires'])}")
    lines.append("  graph:")
    lines += [f"    {'  ' * t['depth']}{t['name']}  [{t['urn']}]" for t in d["transforms"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m beam_jobs.building.template",
        description="Describe a staged Dataflow job description.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("describe", help="summarise a template (graph, staged files, options)")
    d.add_argument("template_uri", help="gs://... (or a local path) of the template file")
    d.add_argument("--json", action="store_true", help="print the description as JSON")
    args = p.parse_args(argv)
    try:
        desc = describe(args.template_uri)
    except TemplateError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(desc, indent=1, sort_keys=True) if args.json else format_description(desc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
