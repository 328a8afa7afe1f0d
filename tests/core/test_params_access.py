"""Params that point at files the run should not read: secrets never quoted in an
error, the deployment's allowed roots, overlap through symlinks, and the bounds
of every list a user passes (``beam_jobs.access``, ``ssl_splits.config``,
``beam_jobs.planning.algorithm``, ``beam_jobs.source.tfds_meta``).

Real files, real symlinks, and a real ``airflow.cfg``-like secrets file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pytest
from ssl_splits import config
from ssl_splits.config import ConfigError, resolve
from ssl_splits.form import params

from beam_jobs import access
from beam_jobs.planning import inputs as split_algorithm
from beam_jobs.planning import plans as plan_cli
from beam_jobs.planning.algorithm import PlanError
from beam_jobs.source import tfds_meta
from beam_jobs.source.catalog import CATALOG_FILE, REPORT_FILE, SCHEMA, write_table
from beam_jobs.source.example_proto import ExampleError, build_example, parse_image_record

# What a leak would show: every one must stay out of every message.
SECRETS = (
    "postgresql+psycopg2://airflow:Pg-s3cret-Passw0rd@postgres/airflow",
    "Pg-s3cret-Passw0rd",
    "fernet_key",
    "V2hhdC1hLWZlcm5ldC1rZXktbG9va3MtbGlrZS0xMjM0NTY=",
    "jwt_secret",
    "Jwt-S3cret-Value",
    "sql_alchemy_conn",
    "[core]",
    "webserver",
)
AIRFLOW_CFG = f"""[core]
dags_folder = /opt/airflow/dags
fernet_key = {SECRETS[3]}

[database]
sql_alchemy_conn = {SECRETS[0]}

[api_auth]
jwt_secret = {SECRETS[5]}

[webserver]
allowed_origins = https://a.example,https://b.example,https://c.example
"""


def image_features(filename: bytes) -> dict[str, object]:
    """One record's features (the common layout) with this file name."""
    return {
        "image/encoded": b"\xff\xd8 not really a jpeg",
        "image/filename": filename,
        "image/class/label": 3,
        "image/class/synset": b"n00000003",
    }


def assert_no_secret(message: str) -> None:
    leaked = [s for s in SECRETS if s in message]
    assert not leaked, f"{leaked} leaked into: {message}"
    for line in AIRFLOW_CFG.splitlines():
        if len(line.strip()) > 3:
            assert line.strip() not in message, f"line {line!r} leaked into: {message}"


@pytest.fixture
def secrets_file(tmp_path: Path) -> Path:
    path = tmp_path / "airflow-home" / "airflow.cfg"
    path.parent.mkdir(exist_ok=True)
    path.write_text(AIRFLOW_CFG)
    return path


@pytest.fixture
def env(monkeypatch, tmp_path: Path) -> Path:
    """No allowed roots, an Airflow home of its own (not the test's data)."""
    monkeypatch.delenv(access.ENV_ALLOWED_ROOTS, raising=False)
    monkeypatch.delenv("AIRFLOW_CONFIG", raising=False)
    home = tmp_path / "airflow-home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("AIRFLOW_HOME", str(home))
    return home


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    """A 40-record catalog as the validation job writes it."""
    names = [f"n{c:08d}_{k}.JPEG" for c in (1, 2) for k in range(20)]
    cat = tmp_path / "catalog"
    table = pa.table(
        {
            "filename": names,
            "label": [1] * 20 + [2] * 20,
            "synset": [f"n{c:08d}" for c in (1, 2) for _ in range(20)],
            "file": ["/src/train-00000-of-00001"] * 40,
            "record": list(range(40)),
            "offset": [100 * i for i in range(40)],
            "length": [100] * 40,
            "data_crc": [0] * 40,
        },
        schema=SCHEMA,
    )
    write_table(str(cat / CATALOG_FILE), table)
    (cat / REPORT_FILE).write_text(json.dumps({"num_shards": 1, "synsets": {}}))
    return cat


# --------------------------------------------------------------------------- no file content in errors


def test_a_secrets_file_as_a_sharding_file_is_named_by_line_never_quoted(secrets_file, env):
    with pytest.raises(PlanError) as err:
        split_algorithm.read_plan_file(str(secrets_file), seed=3)
    msg = str(err.value)
    assert str(secrets_file) in msg
    assert "line 1: expected 3 comma-separated fields (filename,shard,index), found 1" in msg
    # The one line with commas: named by its number and field, not its text.
    assert "line 12: the shard (field 2) is not a non-negative integer" in msg
    assert_no_secret(msg)


def test_a_secrets_file_as_a_name_list_is_named_by_line_never_quoted(secrets_file, env):
    with pytest.raises(PlanError) as err:
        split_algorithm.read_name_list(str(secrets_file))
    msg = str(err.value)
    assert str(secrets_file) in msg
    assert "line 12: a file name must not contain ','" in msg
    assert_no_secret(msg)


def test_a_secrets_file_without_commas_as_a_name_list_names_lines_only(
    tmp_path, catalog, env, capsys
):
    """Lines that parse as names but are not in the source: named by line number."""
    secret = tmp_path / "no-commas.cfg"
    secret.write_text("".join(f"{line}\n" for line in AIRFLOW_CFG.splitlines() if "," not in line))
    rc = plan_cli.main(
        [
            f"--catalog_dir={catalog}",
            f"--out_dir={tmp_path / 'plans'}",
            "--seeds=",
            f"--name_list=mine={secret}",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1
    assert f"{secret}: 8 of 8 names are not in the source catalog (40 records)" in err
    assert "e.g. the names on lines 1, 2, 3, 5, 6" in err
    assert_no_secret(err)


def test_a_secrets_file_as_a_well_formed_plan_names_positions_only(tmp_path, catalog, env):
    """A plan file whose names are secrets: the missing ones named by position."""
    plan = tmp_path / "plan.txt"
    plan.write_text(f"{SECRETS[1]},0,0\n{SECRETS[5]},0,1\n")
    with pytest.raises(PlanError) as err:
        plan_cli.make_plans(
            str(catalog), plan_cli.PlanRequest(seeds=(3,), sharding_files=((3, str(plan)),))
        )
    msg = str(err.value)
    assert "2 of 2 names are not in the source catalog, e.g. the names at shard 0 index 0" in msg
    assert_no_secret(msg)


def test_not_utf8_names_line_and_offset_not_bytes(tmp_path, env):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"a\nb\ncaf\xe9-Pg-s3cret-Passw0rd\n")
    for read in (split_algorithm.read_name_list, split_algorithm.read_plan_file):
        with pytest.raises(PlanError) as err:
            read(str(path))
        msg = str(err.value)
        assert f"{path}: not UTF-8 text (line 3, byte offset 7)" in msg
        assert "xe9" not in msg and "caf" not in msg
        assert_no_secret(msg)


@pytest.mark.parametrize(
    "name, kind, said",
    [
        (b"Pg-s3cret-Passw0rd,0,0", "bad_filename", "has a ',' or a newline (at character 18)"),
        (b"Pg-s3cret-Passw0rd\nx", "bad_filename", "has a ',' or a newline"),
        (b"Pg-s3cret-Passw0rd\xff", "bad_filename", "is not UTF-8 (byte 18 of 19)"),
    ],
)
def test_example_errors_do_not_quote_the_record(name, kind, said):
    with pytest.raises(ExampleError) as err:
        parse_image_record(build_example(image_features(name)))
    assert err.value.kind == kind and said in str(err.value)
    assert_no_secret(str(err.value))


def test_a_record_that_is_not_an_example_is_not_quoted():
    with pytest.raises(ExampleError) as err:
        parse_image_record(AIRFLOW_CFG.encode())
    assert err.value.kind == "not_an_example"
    assert_no_secret(str(err.value))


# --------------------------------------------------------------------------- label.labels.txt


def test_label_names_file_is_checked_and_never_quoted(tmp_path, secrets_file):
    src = tmp_path / "src"
    src.mkdir()
    assert tfds_meta.read_label_names(str(src)) is None
    (src / "label.labels.txt").write_text("n01440764\nn01443537\n\n")
    assert tfds_meta.read_label_names(str(src)) == ["n01440764", "n01443537"]
    (src / "label.labels.txt").write_text(f"n01440764\n\n{SECRETS[1]}\x07\n")
    with pytest.raises(tfds_meta.TfdsMetadataError) as err:
        tfds_meta.read_label_names(str(src))
    assert "label.labels.txt: line 2: the class name is empty" in str(err.value)
    (src / "label.labels.txt").write_text(f"n01440764\n{SECRETS[1]}\x07\n")
    with pytest.raises(tfds_meta.TfdsMetadataError) as err:
        tfds_meta.read_label_names(str(src))
    assert "line 2: the class name has a control character" in str(err.value)
    assert_no_secret(str(err.value))


def test_label_names_file_linked_out_of_the_source_is_refused(tmp_path, secrets_file):
    src = tmp_path / "src"
    src.mkdir()
    (src / "label.labels.txt").symlink_to(secrets_file)
    with pytest.raises(tfds_meta.TfdsMetadataError) as err:
        tfds_meta.read_label_names(str(src))
    assert "outside the source folder" in str(err.value)
    assert_no_secret(str(err.value))


def test_label_names_file_size_is_bounded(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    (src / "label.labels.txt").write_text("n01440764\n" * 10)
    monkeypatch.setattr(tfds_meta, "MAX_LABEL_NAMES_BYTES", 50)
    with pytest.raises(tfds_meta.TfdsMetadataError, match="larger than the 50 bytes"):
        tfds_meta.read_label_names(str(src))


# --------------------------------------------------------------------------- allowed roots


def test_parse_allowed_roots():
    assert access.parse_allowed_roots(None) == ()
    assert access.parse_allowed_roots(" ,\n ") == ()
    assert access.parse_allowed_roots("/data/a/, gs://bkt//x/ gs://ccc\n/data/b,/data/a") == (
        "/data/a",
        "gs://bkt/x",
        "gs://ccc",
        "/data/b",
    )
    for bad in ("data/rel", "s3://b/x", "gs://B", "gs://bkt/../x", "gs://bkt/%2e%2e", "~/x"):
        with pytest.raises(access.AccessError, match="SSL_SPLITS_ALLOWED_ROOTS"):
            access.parse_allowed_roots(bad)


@pytest.mark.parametrize(
    "uri, want",
    [
        ("gs://bkt/a", "gs://bkt/a"),
        ("gs://bkt/a/", "gs://bkt/a"),
        ("gs://bkt//a///c//", "gs://bkt/a/c"),
        ("gs://bkt", "gs://bkt"),
        ("gs://bkt/", "gs://bkt"),
    ],
)
def test_normalize_gcs(uri, want):
    assert access.normalize_gcs(uri) == want


@pytest.mark.parametrize(
    "uri",
    [
        "gs://bkt/a/../x",
        "gs://bkt/./a",
        "gs://bkt/a/..",
        "gs://bkt/a%2F..%2Fx",
        "gs://bkt/a?x",
        "gs://bkt/a#x",
    ],
)
def test_normalize_gcs_refuses_tricks(uri):
    with pytest.raises(access.AccessError):
        access.normalize_gcs(uri)


def test_gcs_roots_match_whole_components(env):
    roots = access.parse_allowed_roots("gs://bkt/a gs://other")
    for ok in ("gs://bkt/a", "gs://bkt/a/x", "gs://bkt//a//x/", "gs://other/anything"):
        access.check_location("p", ok, roots)
    for bad in (
        "gs://bkt/ab",
        "gs://bkt/ab/x",
        "gs://bkt",
        "gs://bkt/x",
        "gs://bkt2/a",
        "gs://othe/a",
    ):
        with pytest.raises(access.AccessError, match=r"p=gs://.* is outside the allowed roots"):
            access.check_location("p", bad, roots)
    with pytest.raises(access.AccessError):
        access.check_location("p", "/data/x", roots)  # no local root: no local path


def test_local_roots_on_real_paths(tmp_path, env):
    root = tmp_path / "allowed"
    (root / "data").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "escape").symlink_to(outside)  # a symlink out of the root
    (tmp_path / "alias").symlink_to(root)  # a symlink into the root from outside
    roots = access.parse_allowed_roots(str(root))
    access.check_location("p", str(root / "data"), roots)
    access.check_location("p", str(root / "data" / "not" / "yet"), roots)  # leaves not created
    access.check_location("p", str(tmp_path / "alias" / "data"), roots)  # real path inside
    for bad in (outside, root / "escape", root / "escape" / "new" / "leaf", tmp_path / "allowedx"):
        with pytest.raises(access.AccessError, match="outside the allowed roots"):
            access.check_location("p", str(bad), roots)
    with pytest.raises(access.AccessError, match=r"resolved: .*outside"):
        access.check_location("p", str(root / "escape" / "x"), roots)
    # A dangling link is followed too: writing through it lands at its target.
    (root / "dangling").symlink_to(outside / "later")
    with pytest.raises(access.AccessError):
        access.check_location("p", str(root / "dangling"), roots)
    # A root given through a symlink is judged on its real path.
    access.check_location(
        "p", str(root / "data"), access.parse_allowed_roots(str(tmp_path / "alias"))
    )


def test_unset_roots_allow_any_path_but_never_the_airflow_home(tmp_path, env, monkeypatch):
    for ok in ("/", "/data/x", str(tmp_path / "anything"), "gs://bkt/x"):
        access.check_location("p", ok, ())
    for bad in (env, env / "airflow.cfg", env / "logs" / "new"):
        with pytest.raises(access.AccessError, match="points into the Airflow installation"):
            access.check_location("p", str(bad), ())
    # Through a symlink, and when the roots allow it: still refused.
    (tmp_path / "innocent").symlink_to(env)
    with pytest.raises(access.AccessError, match=r"its real path is .*airflow-home"):
        access.check_location("p", str(tmp_path / "innocent" / "airflow.cfg"), ())
    with pytest.raises(access.AccessError, match="Airflow installation"):
        access.check_location("p", str(env / "x"), access.parse_allowed_roots(str(tmp_path)))
    # AIRFLOW_CONFIG outside the home is refused too; AIRFLOW_HOME unset: ~/airflow.
    cfg = tmp_path / "etc" / "airflow.cfg"
    cfg.parent.mkdir()
    cfg.write_text(AIRFLOW_CFG)
    monkeypatch.setenv("AIRFLOW_CONFIG", str(cfg))
    with pytest.raises(access.AccessError, match="Airflow installation"):
        access.check_location("p", str(cfg), ())
    access.check_location("p", str(cfg.parent / "other.txt"), ())
    monkeypatch.delenv("AIRFLOW_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    with pytest.raises(access.AccessError, match="Airflow installation"):
        access.check_location("p", str(tmp_path / "user" / "airflow" / "airflow.cfg"), ())


# --------------------------------------------------------------------------- resolve()


def test_resolve_checks_every_uri_param_against_the_roots(tmp_path, env, monkeypatch):
    root = tmp_path / "root"
    (root / "src").mkdir(parents=True)
    outside = tmp_path / "outside"
    monkeypatch.setenv(access.ENV_ALLOWED_ROOTS, f"{root} gs://bkt/ok")
    ok = {"source_uri": str(root / "src"), "output_uri": str(root / "out")}
    assert resolve(ok).work_uri == str(root / "out" / "_work")
    bad_values = {
        "source_uri": str(outside / "src"),
        "output_uri": "gs://bkt/okay",
        "manifest_uri": str(outside / "m.json"),
        "work_uri": "gs://bkt/ok/../x",
    }
    for name, value in bad_values.items():
        with pytest.raises(ConfigError, match=rf"{name}"):
            resolve({**ok, name: value})
    with pytest.raises(ConfigError, match=r"sharding_files\[3\]=.*outside the allowed roots"):
        resolve({**ok, "seeds": [3], "sharding_files": {"3": str(outside / "p.txt")}})
    with pytest.raises(ConfigError, match=r"name_lists\[mine\]=gs://bkt/oka/n.txt is outside"):
        resolve({**ok, "name_lists": {"mine": "gs://bkt/oka/n.txt"}})
    dataflow = {
        "source_uri": "gs://bkt/ok/src",
        "output_uri": "gs://bkt/ok/out",
        "runner": "DataflowRunner",
        "dataflow_project": "p",
        "dataflow_temp_location": "gs://bkt/ok/tmp",
        "dataflow_worker_package": "gs://bkt/ok/w.whl",
    }
    assert resolve(dataflow).dataflow is not None
    for name, value in (
        ("dataflow_temp_location", "gs://other/tmp"),
        ("dataflow_worker_package", str(outside / "w.whl")),
        ("dataflow_template_location", "gs://bkt/templates"),
    ):
        with pytest.raises(ConfigError, match=rf"{name}=.* is outside the allowed roots"):
            resolve({**dataflow, name: value})
    # The message names the roots.
    with pytest.raises(ConfigError, match=rf"SSL_SPLITS_ALLOWED_ROOTS: {root}, gs://bkt/ok\)"):
        resolve({**ok, "source_uri": "/elsewhere"})


def test_resolve_refuses_the_airflow_home_and_a_bad_setting(
    tmp_path, env, monkeypatch, secrets_file
):
    ok = {"source_uri": str(tmp_path / "src"), "output_uri": str(tmp_path / "out")}
    assert resolve(ok)
    with pytest.raises(ConfigError, match=r"sharding_files\[1\]=.*Airflow installation"):
        resolve({**ok, "seeds": [1], "sharding_files": {"1": str(secrets_file)}})
    with pytest.raises(ConfigError, match=r"name_lists\[x\]=.*Airflow installation"):
        resolve({**ok, "name_lists": {"x": str(secrets_file)}})
    # The default {output}/_work is checked too: a symlink there into the home.
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "_work").symlink_to(env)
    with pytest.raises(ConfigError, match="work_uri=.*Airflow installation"):
        resolve(ok)
    monkeypatch.setenv(access.ENV_ALLOWED_ROOTS, "relative/path")
    with pytest.raises(ConfigError, match="SSL_SPLITS_ALLOWED_ROOTS: entry 'relative/path'"):
        resolve(ok)


def test_resolve_normalizes_gcs_uris_as_it_checks_them(env):
    cfg = resolve({"source_uri": "gs://bkt//src/", "output_uri": "gs://bkt/out//x/"})
    assert (cfg.source_uri, cfg.output_uri) == ("gs://bkt/src", "gs://bkt/out/x")
    for bad in ("gs://bkt/a/./x", "gs://bkt/a%2e%2e/x", "gs://bkt/a?x=1"):
        with pytest.raises(ConfigError, match="source_uri"):
            resolve({"source_uri": bad, "output_uri": "gs://bkt/out"})


# --------------------------------------------------------------------------- overlap on real paths


@pytest.fixture
def folders(tmp_path: Path, env) -> dict[str, Path]:
    src = tmp_path / "src"
    (src / "inner").mkdir(parents=True)
    out = tmp_path / "out"
    out.mkdir()
    links = tmp_path / "links"
    links.mkdir()
    (links / "to-src").symlink_to(src)
    (links / "to-src-inner").symlink_to(src / "inner")
    (links / "to-out").symlink_to(out)
    return {"src": src, "out": out, "links": links}


def test_string_overlap_rules_keep_their_messages(folders):
    src, out = str(folders["src"]), str(folders["out"])
    with pytest.raises(ConfigError, match="must not be the source folder or inside it"):
        resolve({"source_uri": src, "output_uri": f"{src}/x"})
    with pytest.raises(ConfigError, match="must not be inside output_uri"):
        resolve({"source_uri": f"{out}/x", "output_uri": out})
    with pytest.raises(ConfigError, match="work_uri .* must not be inside source_uri"):
        resolve({"source_uri": src, "output_uri": out, "work_uri": f"{src}/w"})
    with pytest.raises(ConfigError, match="manifest_uri .* must not be inside source_uri"):
        resolve({"source_uri": src, "output_uri": out, "manifest_uri": f"{src}/m.json"})


@pytest.mark.parametrize(
    "params, a, b",
    [
        ({"output_uri": "{links}/to-src/out"}, "output_uri", "source_uri"),
        ({"output_uri": "{links}/to-src"}, "output_uri", "source_uri"),
        ({"source_uri": "{links}/to-out/src"}, "source_uri", "output_uri"),
        ({"work_uri": "{links}/to-src-inner/w"}, "work_uri", "source_uri"),
        ({"manifest_uri": "{links}/to-src/m.json"}, "manifest_uri", "source_uri"),
        ({"work_uri": "{links}/w", "source_uri": "{links}/w/src"}, "source_uri", "work_uri"),
    ],
    ids=[
        "output-in-source",
        "output-is-source",
        "source-in-output",
        "work-in-source",
        "manifest-in-source",
        "source-in-work",
    ],
)
def test_overlap_through_symlinks_is_refused(folders, params, a, b):
    base = {"source_uri": str(folders["src"]), "output_uri": str(folders["out"])}
    p = {**base, **{k: v.format(links=folders["links"]) for k, v in params.items()}}
    if p["source_uri"] == f"{folders['links']}/w/src":
        (folders["links"] / "w").symlink_to(folders["src"].parent)  # work contains the source
        p["source_uri"] = str(folders["src"])
        p["work_uri"] = f"{folders['links']}/w"
    assert resolve(base)
    with pytest.raises(ConfigError) as err:
        resolve(p)
    msg = str(err.value)
    assert f"{a} " in msg and f"{b} " in msg, msg
    assert "through a symlink" in msg or "must not be" in msg, msg


def test_overlap_through_symlinks_message(folders):
    link = f"{folders['links']}/to-src/out"
    with pytest.raises(ConfigError) as err:
        resolve({"source_uri": str(folders["src"]), "output_uri": link})
    assert str(err.value) == (
        f"output_uri {link} and source_uri {folders['src']} overlap through a symlink: "
        f"output_uri's real path {os.path.realpath(folders['src'])}/out is source_uri's real "
        f"path {os.path.realpath(folders['src'])} or inside it; the source and the folders a "
        "run writes must be apart"
    )


# --------------------------------------------------------------------------- bounds


def test_list_params_are_bounded_in_resolve_and_in_the_form(env):
    ok = {"source_uri": "/data/src", "output_uri": "/data/out"}
    form = params()
    assert form["seeds"].schema["maxItems"] == config.MAX_SEEDS
    assert form["fractions"].schema["maxItems"] == config.MAX_FRACTIONS
    assert form["sharding_files"].schema["maxProperties"] == config.MAX_SHARDING_FILES
    assert form["name_lists"].schema["maxProperties"] == config.MAX_NAME_LISTS
    many_lists = {f"l{i}": f"/data/l{i}.txt" for i in range(config.MAX_NAME_LISTS + 1)}
    with pytest.raises(
        ConfigError, match=rf"name_lists: at most {config.MAX_NAME_LISTS} lists, got"
    ):
        resolve({**ok, "name_lists": many_lists})
    del many_lists["l0"]
    assert len(resolve({**ok, "name_lists": many_lists}).name_lists) == config.MAX_NAME_LISTS
    seeds = list(range(1, config.MAX_SEEDS + 2))
    with pytest.raises(ConfigError, match=rf"seeds: at most {config.MAX_SEEDS} items"):
        resolve({**ok, "seeds": seeds})
    files = {str(s): f"/data/p{s}.txt" for s in seeds}
    with pytest.raises(ConfigError, match=rf"sharding_files: at most {config.MAX_SHARDING_FILES}"):
        resolve({**ok, "seeds": seeds[:-1], "sharding_files": files})
    with pytest.raises(ConfigError, match=rf"fractions: at most {config.MAX_FRACTIONS}"):
        resolve({**ok, "fractions": [0.01 * i for i in range(1, config.MAX_FRACTIONS + 2)]})
    with pytest.raises(ConfigError, match="source_uri: a URI of at most"):
        resolve({**ok, "source_uri": "/" + "x" * config.MAX_URI_LENGTH})


def test_list_file_size_is_checked_before_reading(tmp_path, env):
    big = tmp_path / "big.txt"
    with open(big, "wb") as f:  # sparse: 64 MiB + 1 without writing them
        f.truncate(access.MAX_LIST_BYTES + 1)
    for read, what in (
        (split_algorithm.read_name_list, "name list"),
        (split_algorithm.read_plan_file, "plan file"),
    ):
        with pytest.raises(PlanError, match=rf"{what} {big} is 67,108,865 bytes or more: larger"):
            read(str(big))


def test_list_files_may_not_have_more_lines_than_the_source_has_records(tmp_path, catalog, env):
    names = tmp_path / "names.txt"
    names.write_text("".join(f"n00000001_{k}.JPEG\n" for k in range(41)))
    with pytest.raises(PlanError, match=r"name list .* has 41 lines: more than the 40 records"):
        split_algorithm.read_name_list(str(names), max_lines=40)
    with pytest.raises(PlanError, match=r"has 41 lines: more than the 40 records of the source"):
        plan_cli.make_plans(
            str(catalog), plan_cli.PlanRequest(seeds=(), name_lists=(("mine", str(names)),))
        )
    # Blank lines do not count; 40 names in 41 lines is fine.
    names.write_text("".join(f"n00000001_{k}.JPEG\n" for k in range(20)) + "\n" * 3)
    listed, _ = split_algorithm.read_name_list(str(names), max_lines=20)
    assert len(listed) == 20


def test_only_regular_files_are_read(tmp_path, env):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opening it for reading must not wait for a writer
    with pytest.raises(PlanError, match=rf"name list {fifo} is not a regular file"):
        split_algorithm.read_name_list(str(fifo))
    with pytest.raises(PlanError, match=rf"plan file {tmp_path} is a folder, not a file"):
        split_algorithm.read_plan_file(str(tmp_path))
    with pytest.raises(PlanError, match="does not exist"):
        split_algorithm.read_plan_file(str(tmp_path / "nope"))


def test_plan_cli_applies_the_roots_too(tmp_path, catalog, env, monkeypatch, secrets_file):
    names = tmp_path / "names.txt"
    names.write_text("n00000001_1.JPEG\n")
    monkeypatch.setenv(access.ENV_ALLOWED_ROOTS, str(tmp_path / "elsewhere"))
    with pytest.raises(PlanError, match="name list mine=.* is outside the allowed roots"):
        plan_cli.make_plans(
            str(catalog), plan_cli.PlanRequest(seeds=(), name_lists=(("mine", str(names)),))
        )
    monkeypatch.delenv(access.ENV_ALLOWED_ROOTS)
    with pytest.raises(PlanError, match="Airflow installation"):
        plan_cli.make_plans(
            str(catalog), plan_cli.PlanRequest(seeds=(3,), sharding_files=((3, str(secrets_file)),))
        )
