"""``config.resolve()``: params -> RunConfig, and each bad param -> a ConfigError
naming the param and its value (pure: no DAG run, no storage)."""

from __future__ import annotations

import pytest
from ssl_splits.config import ConfigError, RunConfig, resolve, resolve_conf
from ssl_splits.form import FIELDS, params

from beam_jobs.access import AllowedLocations

OK = {"source_uri": "/data/imagenet", "output_uri": "/data/ssl"}
DATAFLOW = {
    "source_uri": "gs://bkt/imagenet",
    "output_uri": "gs://bkt/ssl",
    "runner": "DataflowRunner",
    "dataflow_project": "proj",
    "dataflow_temp_location": "gs://bkt/tmp",
    "dataflow_worker_package": "gs://bkt/w.whl",
}


@pytest.mark.parametrize(
    "params, want",
    [
        pytest.param(
            OK,
            {
                "manifest_uri": "/data/ssl/manifest.json",
                "work_uri": "/data/ssl/_work",
                "seeds": [1, 2, 3, 4, 5],
                "fraction": "0.1",
                "fractions": [],
                "sampling": "stratified",
                "runner": "DirectRunner",
                "unsupervised": True,
                "copy_validation": True,
                "force": False,
                "num_classes": 1000,
                "deep_verify": False,
                "direct_num_workers": 0,
                "protocol": "seeded",
                "dataflow": None,
                "sharding_files": {},
                "name_lists": {},
            },
            id="defaults",
        ),
        pytest.param(
            {
                "source_uri": "gs://bkt/imagenet/",
                "output_uri": "/data/ssl/./out/",
                "manifest_uri": "gs://bkt/m.json",
                "work_uri": "/scratch/w",
            },
            {
                "source_uri": "gs://bkt/imagenet",
                "output_uri": "/data/ssl/out",
                "manifest_uri": "gs://bkt/m.json",
                "work_uri": "/scratch/w",
            },
            id="uris_normalized",
        ),
        pytest.param(
            {**OK, "seeds": ["3", " 4 ", ""], "fraction": 0.05, "sampling": "uniform"},
            {"seeds": [3, 4], "fraction": "0.05", "sampling": "uniform"},
            id="form_seeds_and_fraction",
        ),
        pytest.param(
            {**OK, "fractions": ["0.1", 0.05, "0.01", ""]},
            {"fraction": "0.1", "fractions": ["0.1", "0.05", "0.01"]},
            id="fractions",
        ),
        pytest.param(
            {**OK, "seeds": [3], "sharding_files": {"3": "gs://bkt/split3.txt"}},
            {"sharding_files": {"3": "gs://bkt/split3.txt"}},
            id="sharding_files",
        ),
        pytest.param(
            {**OK, "protocol": "simclr"},
            {"seeds": [], "protocol": "simclr"},
            id="simclr_sets_seeds_aside",
        ),
        pytest.param(
            {
                **OK,
                "deep_verify": "always",
                "force": True,
                "num_shards": 7,
                "unsupervised": False,
                "direct_num_workers": 2,
            },
            {
                "deep_verify": True,
                "force": True,
                "num_shards": 7,
                "unsupervised": False,
                "direct_num_workers": 2,
            },
            id="advanced",
        ),
        pytest.param(DATAFLOW, {"is_dataflow": True, "template_location": None}, id="dataflow"),
    ],
)
def test_resolve_good_params(params, want):
    cfg = resolve(params)
    got = {k: getattr(cfg, k) for k in want}
    assert got == want
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


def test_resolve_dataflow_settings_and_their_defaults():
    cfg = resolve({**DATAFLOW, "dataflow_template_location": "gs://bkt/templates/"})
    assert cfg.dataflow is not None
    assert cfg.dataflow.to_dict() == {
        "worker_package": "gs://bkt/w.whl",
        "project": "proj",
        "region": "us-central1",
        "temp_location": "gs://bkt/tmp",
        "machine_type": "n2-standard-4",
        "max_num_workers": 20,
        "template_location": "gs://bkt/templates",
    }
    assert cfg.template_location == "gs://bkt/templates"
    cfg = resolve(
        {
            **DATAFLOW,
            "dataflow_region": "europe-west4",
            "dataflow_machine_type": "n2-highmem-8",
            "dataflow_max_workers": 5,
        }
    )
    assert cfg.dataflow is not None
    assert (cfg.dataflow.region, cfg.dataflow.machine_type, cfg.dataflow.max_num_workers) == (
        "europe-west4",
        "n2-highmem-8",
        5,
    )


# (params, the param the message names, the value it quotes)
BAD = [
    pytest.param({"output_uri": "/o"}, "source_uri", "required", id="source_missing"),
    pytest.param(
        {**OK, "source_uri": "data/imagenet"}, "source_uri", "'data/imagenet'", id="relative_source"
    ),
    pytest.param(
        {**OK, "source_uri": "s3://b/imagenet"},
        "source_uri",
        "'s3://b/imagenet'",
        id="unknown_scheme",
    ),
    pytest.param(
        {**OK, "output_uri": "/data/ssl/../x"}, "output_uri", "'/data/ssl/../x'", id="dotdot"
    ),
    pytest.param(
        {**OK, "output_uri": "/data/imagenet/out"},
        "output_uri",
        "/data/imagenet/out",
        id="output_inside_source",
    ),
    pytest.param(
        {**OK, "work_uri": "/data/imagenet/w"},
        "work_uri",
        "/data/imagenet/w",
        id="work_inside_source",
    ),
    pytest.param(
        {**OK, "manifest_uri": "/data/imagenet/m.json"},
        "manifest_uri",
        "/data/imagenet/m.json",
        id="manifest_inside_source",
    ),
    pytest.param({**OK, "seeds": [0]}, "seeds", "got 0", id="seed_zero"),
    pytest.param({**OK, "seeds": ["x"]}, "seeds", "'x'", id="seed_not_a_number"),
    pytest.param({**OK, "seeds": [2, 2]}, "seeds", "seed 2", id="seed_repeated"),
    pytest.param({**OK, "seeds": 3}, "seeds", "got 3", id="seeds_not_a_list"),
    pytest.param({**OK, "fraction": 1.5}, "fraction", "1.5", id="fraction_above_one"),
    pytest.param({**OK, "fraction": True}, "fraction", "True", id="fraction_bool"),
    pytest.param({**OK, "fractions": [0.1, 2]}, "fractions", "(2)", id="fractions_out_of_range"),
    pytest.param(
        {**OK, "fractions": [0.1, "0.10"]}, "fractions", "'0.10'", id="fractions_repeated"
    ),
    pytest.param(
        {**OK, "fraction": 0.2, "fractions": [0.1, 0.05]},
        "fraction",
        "0.2",
        id="fraction_beside_fractions",
    ),
    pytest.param({**OK, "sampling": "random"}, "sampling", "'random'", id="sampling"),
    pytest.param({**OK, "runner": "FlinkRunner"}, "runner", "'FlinkRunner'", id="runner"),
    pytest.param(
        {**OK, "deep_verify": "sometimes"}, "deep_verify", "'sometimes'", id="deep_verify"
    ),
    pytest.param(
        {**OK, "seeds": [1], "sharding_files": {"3": "/s3.txt"}},
        "sharding_files",
        "'3'",
        id="sharding_file_seed_not_built",
    ),
    # str.isdigit() takes these; int() refuses the first and reads the second as 3.
    pytest.param(
        {**OK, "seeds": [3], "sharding_files": {"³": "/s3.txt"}},
        "sharding_files",
        "'³'",
        id="sharding_file_seed_superscript",
    ),
    # A value of the wrong JSON type, in a conf that did not come through Airflow's form
    # check: refused naming the param, not a TypeError from inside (nor "false" read as true).
    pytest.param({**OK, "num_classes": "gs://x"}, "num_classes", "'gs://x'", id="type_num_classes"),
    pytest.param({**OK, "protocol": {"a": 1}}, "protocol", "{'a': 1}", id="type_protocol"),
    pytest.param({**OK, "unsupervised": "false"}, "unsupervised", "'false'", id="type_bool"),
    pytest.param({**OK, "unsupervised_seed": ["3"]}, "unsupervised_seed", "['3']", id="type_seed"),
    pytest.param({**OK, "num_shards": 1.5}, "num_shards", "1.5", id="type_num_shards"),
    pytest.param({**OK, "deep_verify": [1]}, "deep_verify", "[1]", id="type_deep_verify"),
    pytest.param(
        {**OK, "protocol": "fixmatch", "seeds": [3], "sharding_files": {"٣": "/s3.txt"}},
        "sharding_files",
        "'٣'",
        id="sharding_file_seed_arabic_indic",
    ),
    pytest.param(
        {**OK, "protocol": "simclr_5pct"}, "protocol", "'simclr_5pct'", id="protocol_unknown"
    ),
    pytest.param(
        {**OK, "protocol": "fixmatch", "seeds": [2, 6]},
        "seeds",
        "[6]",
        id="fixmatch_seed_unpublished",
    ),
    pytest.param(
        {**OK, "protocol": "fixmatch", "fraction": 0.05}, "fraction", "0.05", id="fixmatch_fraction"
    ),
    pytest.param(
        {**OK, "protocol": "simclr", "seeds": [3]}, "seeds", "[3]", id="simclr_with_seeds"
    ),
    pytest.param({**OK, "name_lists": {"3": "/n.txt"}}, "name_lists", "'3'", id="name_list_label"),
    pytest.param(
        {**OK, "name_lists": {"mine": "n.txt"}},
        "name_lists[mine]",
        "'n.txt'",
        id="name_list_relative",
    ),
    pytest.param(
        {**OK, "seeds": [], "unsupervised": False}, "seeds", "unsupervised", id="nothing_to_build"
    ),
    pytest.param(
        {**DATAFLOW, "dataflow_project": None},
        "dataflow_project",
        "DataflowRunner",
        id="dataflow_without_project",
    ),
    pytest.param(
        {**DATAFLOW, "dataflow_temp_location": "/tmp/x"},
        "dataflow_temp_location",
        "gs://",
        id="dataflow_local_temp",
    ),
    pytest.param(
        {**DATAFLOW, "output_uri": "/data/ssl"},
        "output_uri",
        "/data/ssl",
        id="dataflow_local_output",
    ),
    pytest.param(
        {**DATAFLOW, "dataflow_worker_package": None},
        "dataflow_worker_package",
        "DataflowRunner",
        id="dataflow_without_package",
    ),
    pytest.param(
        {**DATAFLOW, "dataflow_template_location": "/t"},
        "dataflow_template_location",
        "/t",
        id="template_location_local",
    ),
    pytest.param(
        {**OK, "dataflow_template_location": "gs://bkt/t"},
        "dataflow_template_location",
        "DirectRunner",
        id="template_location_without_dataflow",
    ),
]


@pytest.mark.parametrize("params, param, value", BAD)
def test_resolve_bad_param_names_it_and_its_value(params, param, value):
    with pytest.raises(ConfigError) as err:
        resolve(params)
    message = str(err.value)
    assert param in message and value in message, message


def test_config_xcom_is_the_json_earlier_versions_wrote():
    """The ``config`` XCom stays byte-compatible: the same JSON as the dict the
    untyped config produced (``dataflow`` an object, ``{}`` off Dataflow)."""
    import json

    cfg = resolve(DATAFLOW)
    assert json.dumps(cfg.to_dict()) == (
        '{"source_uri": "gs://bkt/imagenet", "output_uri": "gs://bkt/ssl", '
        '"manifest_uri": "gs://bkt/ssl/manifest.json", "work_uri": "gs://bkt/ssl/_work", '
        '"seeds": [1, 2, 3, 4, 5], "fraction": "0.1", "sampling": "stratified", '
        '"sharding_files": {}, "unsupervised": true, "unsupervised_seed": 0, '
        '"runner": "DataflowRunner", "force": false, "num_shards": null, '
        '"unsupervised_shards": null, "copy_validation": true, "num_classes": 1000, '
        '"expected_total": null, "deep_verify": false, "direct_num_workers": 0, '
        '"dataflow": {"worker_package": "gs://bkt/w.whl", "project": "proj", '
        '"region": "us-central1", "temp_location": "gs://bkt/tmp", '
        '"machine_type": "n2-standard-4", "max_num_workers": 20, "template_location": null}, '
        '"protocol": "seeded", "name_lists": {}, "fractions": []}'
    )
    assert resolve(OK).to_dict()["dataflow"] == {}
    assert RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    # An XCom written before a field existed reads with the field's default.
    old = {k: v for k, v in resolve(OK).to_dict().items() if k not in ("fractions", "protocol")}
    assert RunConfig.from_dict(old) == resolve(OK)


def test_resolve_conf_reads_the_deployment_from_its_argument_only(monkeypatch, tmp_path):
    """The pure function: the allowed locations come in, never from the environment."""
    monkeypatch.setenv("SSL_SPLITS_ALLOWED_ROOTS", "gs://elsewhere")
    with pytest.raises(ConfigError, match="source_uri=/data/imagenet is outside the allowed roots"):
        resolve(OK)
    assert resolve_conf(OK, AllowedLocations()).source_uri == "/data/imagenet"
    with pytest.raises(
        ConfigError, match=r"outside the allowed roots \(SSL_SPLITS_ALLOWED_ROOTS: /x\)"
    ):
        resolve_conf(OK, AllowedLocations(roots=("/x",)))
    with pytest.raises(ConfigError, match="output_uri=/data/ssl points into the Airflow"):
        resolve_conf(OK, AllowedLocations(forbidden=("/data/ssl",)))
    monkeypatch.setenv("SSL_SPLITS_ALLOWED_ROOTS", "relative/path")
    with pytest.raises(ConfigError, match="SSL_SPLITS_ALLOWED_ROOTS: entry 'relative/path'"):
        resolve(OK)


def test_the_form_is_its_table_of_fields_with_the_deployment_s_defaults():
    form = params({"SSL_SPLITS_SOURCE_URI": "/src", "SSL_SPLITS_DATAFLOW_REGION": "eu"})
    assert list(form) == [f.name for f in FIELDS]
    assert (form["source_uri"].value, form["output_uri"].value) == ("/src", None)
    assert form["dataflow_region"].value == "eu"
    assert params({})["dataflow_region"].value == "us-central1"
    assert form["num_shards"].schema["section"] == "Advanced: shards, checks, folders"
    assert "section" not in form["seeds"].schema
    # Each Param owns its value and schema: changing one leaves the next form as it was.
    form["seeds"].value.append(6)
    form["manifest_uri"].schema["anyOf"][1]["maxLength"] = 1
    again = params({})
    assert again["seeds"].value == [1, 2, 3, 4, 5]
    assert again["manifest_uri"].schema["anyOf"][1]["maxLength"] == 2048


# A rule a request follows under a protocol is written once (beam_jobs.planning.protocols):
# the params refused by resolve() and the same request refused by the plan step (its CLI)
# give one message.
SAME_RULE = [
    pytest.param(
        {"protocol": "fixmatch", "seeds": [2, 6]},
        {"protocol": "fixmatch", "seeds": (2, 6)},
        id="unpublished_seed",
    ),
    pytest.param(
        {"protocol": "fixmatch", "seeds": [3], "sharding_files": {"3": "/data/split3.txt"}},
        {"protocol": "fixmatch", "seeds": (3,), "sharding_files": ((3, "/data/split3.txt"),)},
        id="seed_given_two_files",
    ),
    pytest.param(
        {"seeds": [3], "sharding_files": {"3": "/data/s3.txt"}, "fractions": [0.1, 0.01]},
        {"seeds": (3,), "sharding_files": ((3, "/data/s3.txt"),), "fractions": ("0.1", "0.01")},
        id="file_at_several_sizes",
    ),
]


@pytest.mark.parametrize("params, request_fields", SAME_RULE)
def test_a_protocol_rule_says_the_same_to_the_form_and_to_the_plan_cli(params, request_fields):
    from beam_jobs.planning.plans import PlanError, PlanRequest, expand_protocol

    with pytest.raises(ConfigError) as by_config:
        resolve({**OK, **params})
    with pytest.raises(PlanError) as by_plan:
        expand_protocol(PlanRequest(**request_fields))
    assert str(by_config.value) == str(by_plan.value)


def test_no_conf_gets_anything_but_a_config_error():
    """Every param given a value of every JSON shape, a few at a time (20,000
    seeded draws): resolve() returns a config or raises a ConfigError, never
    another exception."""
    import random

    names = [f.name for f in FIELDS]
    values = [None, True, False, 0, -1, 2**70, 1.5, float("nan"), "", "³", "٣", "../x"]
    values += ["/data/imagenet", "gs://b/x", "gs://", "a" * 5000, [], [1], ["3"], ["³"], [None]]
    values += [[[1]], {}, {"3": "/data/x"}, {"³": "/x"}, {"3": None}, {"a": "b"}, [0.1, "x"]]
    rng = random.Random(1)
    for _ in range(20_000):
        conf = dict(OK)
        for _ in range(rng.randint(1, 3)):
            conf[rng.choice(names)] = rng.choice(values)
        try:
            resolve(conf)
        except ConfigError:
            pass
