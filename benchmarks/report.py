"""RESULTS.md: the benchmark's tables in Markdown, and its generated sections.

``render`` turns the results (the dict that ``python -m benchmarks.run``
writes to results.json) into the block between the markers of
``benchmarks/RESULTS.md``: the DAG end to end, targets, totals, datasets,
jobs, where the product's builds spend their time, the comparison of outputs,
notes and profiles. The tables and their columns are kept from run to run, so
that figures compare across runs. ``write_section`` replaces one generated
section of a RESULTS.md and keeps the text around it; every benchmark that
writes a section (``benchmarks.run``, ``benchmarks.latency``,
``benchmarks.gcs_verify``) uses it with its own markers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks import dag, pyspy, timeline
from benchmarks.measure import MB


def fmt(v: Any, nd: int = 1) -> str:
    """A figure for a table cell: ``-`` for none, thousands separated."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _mb(v: int | None) -> str:
    return "-" if v is None else f"{v / 1e6:,.1f}"


def job_table(jobs: list[dict[str, Any]]) -> str:
    head = (
        "| dataset | job | wall s | CPU s | records | rec/s | MB/s | read MB | written MB | "
        "read amp | disk read MB | peak RSS tree MiB | max proc MiB | seed / product | "
        "x raw copy |"
    )
    lines = [head, "|" + " --- |" * 2 + " ---: |" * 13]
    for j in jobs:
        name = j["name"] + (" (extrapolated)" if j.get("extrapolated") else "")
        lines.append(
            f"| {j['dataset']} | {name} | {fmt(j['wall_seconds'])} | {fmt(j.get('cpu_seconds'))} | "
            f"{fmt(j.get('records'))} | {fmt(j.get('records_per_s'), 0)} | "
            f"{fmt(j.get('mb_per_s'))} | {_mb(j.get('bytes_read'))} | "
            f"{_mb(j.get('bytes_written'))} | {fmt(j.get('read_amplification'), 2)} | "
            f"{_mb(j.get('disk_read_bytes'))} | "
            f"{fmt(j['peak_rss_tree'] / MB, 0)} | "
            f"{fmt(j['max_rss_process'] / MB if j.get('max_rss_process') else None, 0)} | "
            f"{fmt(j.get('seed_speedup'), 2)} | {fmt(j.get('x_raw_copy'), 2)} |"
        )
    return "\n".join(lines)


def target_table(rows: list[dict]) -> str:
    lines = ["| target | value | met | detail |", "| --- | ---: | --- | --- |"]
    for r in rows:
        met = "-" if r["met"] is None else ("MET" if r["met"] else "MISSED")
        lines.append(f"| {r['target']} | {fmt(r['value'], 2)} | {met} | {r['detail']} |")
    return "\n".join(lines)


def totals_table(tot: dict[str, Any]) -> str:
    lines = [
        (
            "| dataset | product: builds + validation copy (wall / CPU s) | product end to end "
            "(+validate, plan, verify) | seed: six builds (wall / CPU s) | speedup wall | "
            "speedup CPU | product builds as the DAG runs them (wall s / speedup) |"
        ),
        "| --- |" + " ---: |" * 6,
    ]
    for ds, t in tot.items():
        pb, pe, sb = (
            t["product_builds_plus_validation_copy"],
            t["product_end_to_end"],
            t["seed_builds"],
        )
        lines.append(
            f"| {ds} | {fmt(pb['wall_seconds'])} / {fmt(pb['cpu_seconds'])} | "
            f"{fmt(pe['wall_seconds'])} / {fmt(pe['cpu_seconds'])} | "
            f"{fmt(sb['wall_seconds'])} / {fmt(sb['cpu_seconds'])} | "
            f"{fmt(t['speedup_builds_wall_seconds'], 2)} | {fmt(t['speedup_builds_cpu_seconds'], 2)} | "
            + (
                f"{t['product_builds_parallel']['wall_seconds']:.1f} / "
                f"{fmt(t['speedup_builds_parallel_wall_seconds'], 2)} |"
                if t.get("product_builds_parallel")
                else "- | "
            )
        )
    return "\n".join(lines)


def compare_table(rows: list[dict]) -> str:
    lines = [
        (
            "| dataset | split | shards | records (product / seed) | counts per shard equal | "
            "records byte-identical | differing records with the same features (sampled) | "
            "bytes product | bytes seed |"
        ),
        "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for c in rows:
        lines.append(
            f"| {c['dataset']} | {c['split']} | {c['shards_product']} | {c['records_product']:,} / "
            f"{c['records_seed']:,} | {'yes' if c['counts_equal'] else 'NO'} | "
            f"{c['records_byte_identical']:,} | {c['differing_records_same_features']:,} of "
            f"{c['differing_records_parsed']:,} | {c['bytes_product']:,} | {c['bytes_seed']:,} |"
        )
    return "\n".join(lines)


def phases_table(jobs: list[dict[str, Any]]) -> str:
    """Product builds: wall time by phase (from their logs) and peak RSS by process."""
    head = (
        "| dataset | build | wall s | "
        + " | ".join(timeline.PHASES)
        + " | first progress after | steady MB/s | peak RSS by process (MiB) |"
    )
    lines = [head, "| --- | --- |" + " ---: |" * (len(timeline.PHASES) + 3) + " --- |"]
    for j in jobs:
        if j["side"] != "product" or j["stage"] != "build" or not j.get("phases"):
            continue
        ph = j["phases"]
        procs = ", ".join(
            f"{k.replace('python -m ', '')} {v / MB:,.0f}"
            for k, v in sorted(j.get("rss_by_process", {}).items())
        )
        lines.append(
            f"| {j['dataset']} | {j['split']} | {j['wall_seconds']:.1f} | "
            + " | ".join(f"{ph[k]:.1f}" for k in timeline.PHASES)
            + f" | {fmt(ph.get('first_progress'))} | {fmt(ph.get('steady_mb_per_s'))}"
            + f" | {procs} |"
        )
    return "\n".join(lines)


def render(res: dict[str, Any]) -> str:
    """The generated block of RESULTS.md from the results (the dict written to results.json)."""
    meta, data = res["meta"], res["datasets"]
    parts = [
        f"Run {meta['finished_at']} on {meta['host']['cpus']} CPUs "
        f"(load average {meta['host']['loadavg_start']} at start, {meta['host']['loadavg_end']} "
        f"at end), {meta['runner']}; page cache {meta['page_cache'].split(':')[0]}; total "
        f"{meta['total_seconds'] / 60:.1f} min"
        + (" (QUICK sizes)" if meta["quick"] else "")
        + f"; code: commit "
        f"{(meta['git_commit'] or '?')[:8]}, beam_jobs sources {meta['beam_jobs_sha256']}"
        + (
            " (WARNING: beam_jobs changed during the run)"
            if meta.get("beam_jobs_changed_during_run")
            else ""
        )
        + ".",
        "",
        "### What the user waits for: the DAG end to end",
        "",
        (
            "First run on a never-seen source and adding one seed to the published folder, "
            "against the seed reference's six outputs run in this same benchmark (and, for "
            "one more seed, `cp` of that split's bytes plus one Python start-up). Two ways: "
            "**scheduler**, a run triggered through the REST API on a running Airflow "
            "(API server, scheduler with the LocalExecutor at the default parallelism, DAG "
            "processor, triggerer; started, and warmed by one small run, before the timing), "
            "timed from the trigger to the end of `publish_manifest` (the run's end, after "
            "`release_lock`, in brackets), per task the span of its instances; and "
            "**dags test**, `bin/airflow dags test` (tasks one after another in one process), "
            "the wall time of the whole process (the run's own duration in brackets), per-task "
            "times from its log. Beam jobs are DirectRunner subprocesses either way."
        ),
        "",
        dag.table(dag.rows(res["jobs"], data)),
        "",
        "### Targets",
        "",
        target_table(res["targets"]),
        "",
        "### Totals",
        "",
        totals_table(res["totals"]),
        "",
        "### Datasets",
        "",
        "| dataset | train records | shards | train MB | mean record bytes | validation records |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *[
            f"| {k} | {v['train_records']:,} | {v['train_shards']} | {v['train_bytes'] / 1e6:,.1f} | "
            f"{v['mean_record_bytes']:,.0f} | {v['validation_records']:,} |"
            for k, v in data.items()
        ],
        "",
        "### Jobs",
        "",
        job_table(res["jobs"]),
        "",
        "### Product builds: where the wall time goes (from their logs)",
        "",
        (
            "startup = Python + imports; prepare = plan + catalog -> record table; pipeline = "
            "runner and worker start-up, all shards, promotion; teardown = the runner stopping; "
            "first progress after = seconds from the pipeline's start to its first progress line "
            "(~10% of the shards done); steady MB/s = bytes written from then to the end of the "
            "pipeline over that time (approximate: progress is polled about once a second)."
        ),
        "",
        phases_table(res["jobs"]),
    ]
    if res["comparisons"]:
        parts += [
            "",
            "### Product vs seed reference outputs",
            "",
            compare_table(res["comparisons"]),
        ]
    if res["notes"]:
        parts += ["", "Notes:", ""] + [f"* {n}" for n in res["notes"]]
    if res["profiles"]:
        parts += ["", "### Profiles (py-spy, product builds on COUNT)", ""]
        for k, s in res["profiles"].items():
            parts.append(
                pyspy.format_summary(
                    f"{k} ({s['wall_seconds_under_pyspy']:.0f} s wall under py-spy)", s
                )
            )
    return "\n".join(parts) + "\n"


def write_section(
    path: Path, body: str, *, begin: str, end: str, heading: str | None = None
) -> None:
    """Put ``body`` between the markers ``begin`` and ``end`` in ``path``.

    The section between the markers is replaced and the text around it is kept
    (hand-written notes, the other benchmarks' sections). The first time, the
    section is appended (under ``## heading``, if given); a missing file starts
    with the title "# Benchmark results".
    """
    block = f"{begin}\n{body}{end}\n"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if begin in text and end in text:
        pre, rest = text.split(begin, 1)
        text = pre + block + rest.split(end, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + (f"## {heading}\n\n" if heading else "") + block
    path.write_text(text)
