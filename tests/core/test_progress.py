"""beam_jobs.progress: the Beam jobs' progress lines in the task log."""

from __future__ import annotations

import logging
import re
import threading
import time

import pytest

from beam_jobs.progress import Progress, mark_done, progress_dir


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "beam_jobs.progress"]


def test_a_line_every_tenth_of_the_shards_and_a_summary(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="beam_jobs.progress")
    folder = progress_dir(str(tmp_path), "build", "train100.1")
    with Progress(
        "train100.1", folder, 25, total_records=2500, total_bytes=2_500_000, interval=3600
    ) as progress:  # polled by hand below, not by its thread
        for shard in range(25):
            mark_done(folder, shard, 100, 100_000)
            mark_done(folder, shard, 100, 100_000)  # a retried shard counts once
            progress._maybe_log()
    lines = _lines(caplog)
    assert lines[0] == "train100.1: starting: 25 shards, 2,500 records"
    steps = [
        (int(m.group(1)), int(m.group(2)))
        for line in lines
        if (m := re.search(r"progress +(\d+)%: (\d+)/25 shards", line))
    ]
    assert steps == [
        (12, 3),
        (20, 5),
        (32, 8),
        (40, 10),
        (52, 13),
        (60, 15),
        (72, 18),
        (80, 20),
        (92, 23),
        (100, 25),
    ]
    assert "train100.1: progress  40%: 10/25 shards, 1,000/2,500 records, 1.0 MB/2.5 MB" in lines
    assert re.fullmatch(
        r"train100\.1: done: 25/25 shards, 2,500/2,500 records, "
        r"2\.5 MB/2\.5 MB in [\d.]+ s, [\d,]+ records/s",
        lines[-1],
    ), lines[-1]
    assert not (tmp_path / "_progress").exists()  # markers removed


def test_unknown_totals_and_an_error(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="beam_jobs.progress")
    folder = progress_dir(str(tmp_path), "validate")
    with pytest.raises(RuntimeError), Progress("validate", folder, 4, interval=0.02):
        mark_done(folder, 0, 1234, 5678)
        time.sleep(0.1)
        raise RuntimeError("the pipeline failed")
    lines = _lines(caplog)
    assert "validate: progress  25%: 1/4 shards, 1,234 records, 5.7 kB" in lines
    assert lines[-1] == "validate: stopped by an error after 1/4 shards, 1,234 records, 5.7 kB"


def test_progress_never_fails_the_job(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    mark_done(str(blocker / "sub"), 0, 1, 1)  # cannot write: a warning, no exception
    assert "could not write a progress marker" in caplog.text
    with Progress("x", str(blocker / "sub"), 2, interval=0.01):
        time.sleep(0.05)
    assert not [t for t in threading.enumerate() if t.name == "beam-jobs-progress"]


def test_the_launcher_polls_while_it_waits(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="beam_jobs.progress")
    folder = progress_dir(str(tmp_path), "verify", "train")
    with Progress("train", folder, 2, interval=0.01):
        mark_done(folder, 0, 5, 50)
        deadline = time.monotonic() + 30
        while not any("progress  50%" in line for line in _lines(caplog)):
            assert time.monotonic() < deadline, _lines(caplog)
            time.sleep(0.01)
        mark_done(folder, 1, 5, 50)
    assert _lines(caplog)[-1].startswith("train: done: 2/2 shards, 10 records, 100 B in ")


def test_the_last_tenth_is_logged_before_the_summary(tmp_path, caplog):
    """All shards done before the poller looked again: the 100% line still
    comes, when the pipeline has finished, before the summary."""
    caplog.set_level(logging.INFO, logger="beam_jobs.progress")
    folder = progress_dir(str(tmp_path), "build", "train")
    with Progress("train", folder, 2, total_records=10, interval=3600):
        mark_done(folder, 0, 5, 50)
        mark_done(folder, 1, 5, 50)
    lines = _lines(caplog)
    assert lines[-2] == "train: progress 100%: 2/2 shards, 10/10 records, 100 B"
    assert lines[-1].startswith("train: done: 2/2 shards")


def test_polling_while_markers_are_written_warns_of_nothing(tmp_path, caplog):
    """Markers are written as temporary files renamed into place, by other
    processes, while the launcher lists the folder: no listing fails."""
    folder = progress_dir(str(tmp_path), "build", "train")
    progress = Progress("train", folder, 3000, interval=3600)
    writer = threading.Thread(target=lambda: [mark_done(folder, s, 1, 1) for s in range(3000)])
    writer.start()
    polls = 0
    while writer.is_alive() or not polls:
        progress._maybe_log()
        polls += 1
    writer.join()
    assert "could not list" not in caplog.text
    assert progress.poll() == (3000, 3000, 3000)
