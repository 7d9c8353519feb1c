from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from campaign.cli import app
from campaign.spec import SpecError, json_schema, load_spec


def base_spec(store: Path) -> dict[str, Any]:
    return {
        "name": "unit",
        "seed": 3,
        "luminosity_fb": 140,
        "data": {
            "background": {"simulator": "builtin", "events": 1000},
            "observed": {"pseudo": True},
        },
        "signatures": {"muon": {"pt": 25, "abs_eta": 2.5}},
        "observables": ["st", "minv"],
        "searches": [{"method": "scan", "pseudo_rounds": 100}],
        "execution": {"address": "local", "num_cpus": 2},
        "store": str(store),
    }


def write(tmp_path: Path, document: Any, name: str = "campaign.yaml") -> Path:
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document))
    return path


def test_valid_spec_loads_and_has_stable_digest(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, base_spec(tmp_path / "store")))
    again = load_spec(write(tmp_path, base_spec(tmp_path / "store"), "again.yaml"))
    assert spec.name == "unit"
    assert spec.digest() == again.digest()
    assert spec.searches[0].options == {"pseudo_rounds": 100}


def test_schema_validates_a_good_file_and_is_exported_by_the_cli(tmp_path: Path) -> None:
    document = base_spec(tmp_path / "store")
    jsonschema.validate(json.loads(json.dumps(document)), json_schema())
    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["title"] == "CampaignSpec"


def _set(document: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node: Any = document
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is _DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


_DELETE = object()

BAD_FILES = [
    ("unknown key", "nmae", "x", "nmae", "unknown key 'nmae'; allowed:"),
    ("wrong type", "luminosity_fb", "lots", "luminosity_fb", "valid number"),
    ("empty signatures", "signatures", {}, "signatures", "at least one object"),
    ("negative luminosity", "luminosity_fb", -1.0, "luminosity_fb", "greater than 0"),
    ("unknown method", "searches.0.method", "magic", "searches.0.method", "allowed: "),
    (
        "gpu request without gpus",
        "searches.0.resources",
        {"gpus": 1},
        "searches.0.resources.gpus",
        "execution.num_gpus is 0",
    ),
    ("unknown observable", "observables", ["st", "mass2"], "observables", "allowed: "),
    ("missing store", "store", _DELETE, "store", "Field required"),
    ("bad method option", "searches.0.pseudo_rounds", -5, "searches.0", "pseudo_rounds"),
    ("unknown view", "signatures.views", ["sideways"], "signatures", "allowed: exclusive"),
    (
        "unknown injected model",
        "data.observed",
        {"pseudo": True, "inject": {"model": "unicorn", "point": {}}},
        "data.observed",
        "allowed: ",
    ),
    ("empty searches", "searches", [], "searches", "at least 1"),
    ("unknown key deep", "execution.adress", "x", "execution.adress", "allowed: address"),
    (
        "reversed theory range",
        "theory",
        {"models": [{"name": "zprime", "space": {"mass": [5000, 500]}}]},
        "theory.models.0.space",
        "low < high",
    ),
    (
        "unknown theory parameter",
        "theory",
        {"models": [{"name": "zprime", "space": {"mas": [500, 3000]}}], "budget": 4},
        "theory.models.0.space.mas",
        "unknown parameters ['mas']; allowed: mass, g",
    ),
    (
        "unknown model option",
        "theory",
        {"models": [{"name": "zprime", "options": {"chanels": ["mumu"]}}], "budget": 4},
        "theory.models.0.options",
        "unknown options ['chanels']; allowed: channels",
    ),
    (
        "bad model option value",
        "theory",
        {"models": [{"name": "zprime", "options": {"channels": ["mumuu"]}}], "budget": 4},
        "theory.models.0.options",
        "allowed: ee, mumu",
    ),
    (
        "log scale through zero",
        "theory",
        {"models": [{"name": "leptoquark", "space": {"beta": [0, 1, "log"]}}], "budget": 4},
        "theory.models.0.space.beta",
        "a log scale needs low > 0",
    ),
    (
        "theory range outside the model's",
        "theory",
        {"models": [{"name": "zprime", "space": {"mass": [10, 100000]}}], "budget": 4},
        "theory.models.0.space.mass",
        "allowed: within [200, 6000]",
    ),
    (
        "constraints leave no point",
        "theory",
        {
            "models": [
                {"name": "dm_mediator", "space": {"m_med": [100, 200], "m_chi": [500, 1000]}}
            ],
            "budget": 4,
        },
        "theory.models.0.space",
        "constraints ['m_chi < m_med / 2'] leave (almost) no point",
    ),
    (
        "unknown injection parameter",
        "data.observed",
        {"pseudo": True, "inject": {"model": "zprime", "point": {"mas": 1500, "g": 0.3}}},
        "data.observed.inject.point",
        "unknown ['mas'] parameters; allowed: mass, g",
    ),
    (
        "injection outside the model",
        "data.observed",
        {"pseudo": True, "inject": {"model": "zprime", "point": {"mass": 9000, "g": 0.3}}},
        "data.observed.inject.point",
        "outside [200.0, 6000.0]",
    ),
    (
        "malformed Ray address",
        "execution.address",
        "locl",
        "execution.address",
        "allowed: local, auto, ray://<host>:<port>, <host>:<port>",
    ),
    (
        "misspelled class",
        "searches.0.classes",
        ["2mu", "2muu"],
        "searches.0.classes.1",
        "malformed token '2muu'; allowed: tokens '<n>e'",
    ),
    (
        "misspelled method option",
        "searches.0.pseudo_round",
        50,
        "searches.0.pseudo_round",
        "min_region_bins, pseudo_rounds, resources",
    ),
    (
        "unknown background key",
        "data.background.evnts",
        1000,
        "data.background.evnts",
        "unknown key 'evnts'; allowed: events, simulator, tail_boost",
    ),
]


@pytest.mark.parametrize(
    ("label", "path", "value", "location", "fragment"), BAD_FILES, ids=[b[0] for b in BAD_FILES]
)
def test_bad_campaign_file_gives_one_clear_error_and_no_store(
    tmp_path: Path, label: str, path: str, value: Any, location: str, fragment: str
) -> None:
    store = tmp_path / "store"
    document = copy.deepcopy(base_spec(store))
    _set(document, path, value)
    file = write(tmp_path, document)
    with pytest.raises(SpecError) as caught:
        load_spec(file)
    assert any(loc.startswith(location) for loc, _ in caught.value.problems), caught.value
    assert fragment in str(caught.value)
    result = CliRunner().invoke(app, ["run", str(file)])
    assert result.exit_code == 2, result.output
    assert str(file) in result.stderr
    assert fragment in result.stderr
    assert not store.exists()


@pytest.mark.parametrize(
    ("label", "make_store", "fragment"),
    [
        ("store is a file", lambda tmp: _touch(tmp / "afile"), "is not a directory"),
        ("store below a file", lambda tmp: _touch(tmp / "afile") / "store", "not a directory"),
        ("store not writable", lambda tmp: Path("/proc/lamppost-store"), "not writable"),
    ],
)
def test_unusable_store_is_rejected_before_anything_is_written(
    tmp_path: Path, label: str, make_store: Any, fragment: str
) -> None:
    document = base_spec(make_store(tmp_path))
    file = write(tmp_path, document)
    result = CliRunner().invoke(app, ["validate", str(file)])
    assert result.exit_code == 2
    assert "store" in result.stderr and fragment in result.stderr


def _touch(path: Path) -> Path:
    path.write_text("")
    return path


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = write(tmp_path, "name: [unclosed\n")
    for target, fragment in ((bad, "not valid YAML"), (tmp_path / "nope.yaml", "cannot be read")):
        result = CliRunner().invoke(app, ["validate", str(target)])
        assert result.exit_code == 2
        assert fragment in result.stderr


def test_validate_json_lists_every_problem(tmp_path: Path) -> None:
    document = base_spec(tmp_path / "store")
    document["luminosity_fb"] = -3
    document["observables"] = ["nope"]
    result = CliRunner().invoke(app, ["validate", "--json", str(write(tmp_path, document))])
    assert result.exit_code == 2
    problems = json.loads(result.stdout)["problems"]
    assert {p["location"] for p in problems} == {"luminosity_fb", "observables"}


def _observed_files(store: Path, path: str) -> dict[str, Any]:
    document = base_spec(store)
    document["data"] = {"background": None, "observed": {"files": [{"path": path}]}}
    document["searches"] = [{"method": "bumphunt", "pseudo_rounds": 10}]
    return document


def test_sample_paths_expand_variables_and_are_relative_to_the_campaign_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    (data / "run").mkdir(parents=True)
    (data / "run" / "a.parquet").write_bytes(b"")
    (tmp_path / "campaigns").mkdir()
    monkeypatch.setenv("LAMPPOST_DATA", str(data))
    monkeypatch.chdir(tmp_path)
    spec = load_spec(
        write(tmp_path / "campaigns", _observed_files(tmp_path / "s", "${LAMPPOST_DATA}/run/*"))
    )
    assert spec.data.background is None
    assert spec.data.observed.files[0].path == f"{data}/run/*"
    assert spec.data.observed.files[0].files() == [str(data / "run" / "a.parquet")]
    relative = load_spec(
        write(tmp_path / "campaigns", _observed_files(tmp_path / "s", "../data/run/a.parquet"))
    )
    assert Path(relative.data.observed.files[0].path).resolve() == data / "run" / "a.parquet"


def test_unset_variable_and_missing_file_name_the_sample_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LAMPPOST_NOT_SET", raising=False)
    with pytest.raises(SpecError) as caught:
        load_spec(write(tmp_path, _observed_files(tmp_path / "s", "$LAMPPOST_NOT_SET/x.root")))
    assert [loc for loc, _ in caught.value.problems] == ["data.observed.files.0.path"]
    assert "${LAMPPOST_NOT_SET} is not set" in str(caught.value)
    with pytest.raises(SpecError) as caught:
        load_spec(write(tmp_path, _observed_files(tmp_path / "s", "absent/*.root")))
    assert [loc for loc, _ in caught.value.problems] == ["data.observed.files.0.path"]
    assert "matches no file" in str(caught.value)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    ("data", "searches", "location", "fragment"),
    [
        (
            {"background": None, "observed": {"pseudo": True}},
            [{"method": "bumphunt"}],
            "data.observed",
            "allowed: observed files",
        ),
        (
            {"background": None, "observed": {"files": [{"path": "x.parquet"}]}},
            [{"method": "bumphunt"}, {"method": "scan"}],
            "searches.1.method",
            "allowed without a background: bumphunt, autoencoder, cwola, cathode",
        ),
        (
            {
                "background": {
                    "files": [{"path": "x.root", "xsec_pb": 1.0, "weights_luminosity_fb": 1.0}]
                }
            },
            [{"method": "scan"}],
            "data.background.files.0",
            "not both",
        ),
        (
            {"background": {"files": [{"path": "x.root", "preset": "nanoaodd"}]}},
            [{"method": "scan"}],
            "data.background.files.0.preset",
            "allowed: nanoaod, delphes",
        ),
        (
            {"background": {"files": [{"path": "x.parquet", "xsec": 1.0}]}},
            [{"method": "scan"}],
            "data.background.files.0.xsec",
            "unknown key 'xsec'; allowed: label, path, preset, sum_of_weights",
        ),
        (
            {"background": None, "observed": {"files": [{"path": "x.parquet"}]}},
            [{"method": "bumphunt", "fit_function": "dijet5"}],
            "searches.0.fit_function",
            "allowed: bin_min_count, classes, exclude_window_p, function, high",
        ),
    ],
    ids=[
        "pseudo without background",
        "scan without background",
        "two norms",
        "preset",
        "unknown sample key",
        "unknown bump-hunt option",
    ],
)
def test_data_sections_that_cannot_work_are_refused(
    tmp_path: Path, data: dict[str, Any], searches: list[Any], location: str, fragment: str
) -> None:
    document = {**base_spec(tmp_path / "s"), "data": data, "searches": searches}
    with pytest.raises(SpecError) as caught:
        load_spec(write(tmp_path, document), check_store=False)
    assert any(loc == location for loc, _ in caught.value.problems), caught.value
    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    "address",
    ["local", "auto", "ray://head:10001", "10.0.0.1:6379", "[::1]:6379", "ray_head-0.svc:6379"],
)
def test_ray_addresses_in_every_form_ray_takes_are_accepted(tmp_path: Path, address: str) -> None:
    document = base_spec(tmp_path / "store")
    document["execution"]["address"] = address
    assert load_spec(write(tmp_path, document)).execution.address == address


@pytest.mark.parametrize(
    "address", ["locl", "ray://head", "head", "head:0", "head:99999", "http://head:8265", "::1:1"]
)
def test_malformed_ray_addresses_are_refused(tmp_path: Path, address: str) -> None:
    document = base_spec(tmp_path / "store")
    document["execution"]["address"] = address
    with pytest.raises(SpecError, match=r"execution.address: .* is not a Ray address; allowed: "):
        load_spec(write(tmp_path, document))


def test_class_names_are_checked_against_the_grammar_and_the_configured_views(
    tmp_path: Path,
) -> None:
    document = base_spec(tmp_path / "store")
    names = ["2mu", "2mu+X", "2mu+NJet", "1e_1mu_2j_1b_MET", "6j+", "4j+_2b"]
    document["searches"][0]["classes"] = names
    assert load_spec(write(tmp_path, document)).searches[0].classes == names
    refused = {
        "2mu+X": "the inclusive view, which signatures.views leaves out; allowed views: exclusive",
        "7j": "fall in the capped class '6j+'",
        "empty": "is never searched",
        "MET_2mu": "'MET' must be the last token",
    }
    document["signatures"]["views"] = ["exclusive"]
    for name, fragment in refused.items():
        document["searches"][0]["classes"] = ["2mu", name]
        with pytest.raises(SpecError) as caught:
            load_spec(write(tmp_path, document))
        assert [loc for loc, _ in caught.value.problems] == ["searches.0.classes.1"]
        assert fragment in str(caught.value)


def test_a_file_that_is_not_yaml_says_campaign_files_are_yaml(tmp_path: Path) -> None:
    file = write(tmp_path, 'name = "x"\nstore = "runs/x"\n', "campaign.toml")
    result = CliRunner().invoke(app, ["validate", str(file)])
    assert result.exit_code == 2
    assert "<root>: must be a mapping of campaign keys; campaign files are YAML" in result.stderr


def _events_file(path: Path) -> Path:
    from searches.events import make_events, write_parquet

    ones = np.ones(4)
    return write_parquet(make_events({}, met=ones, met_phi=0 * ones, weight=ones), path)


def test_file_uris_are_local_paths_and_other_uris_need_a_scheme_pyarrow_reads(
    tmp_path: Path,
) -> None:
    events = _events_file(tmp_path / "data" / "bkg.parquet")
    document = {**base_spec(tmp_path / "s"), "searches": [{"method": "bumphunt"}]}
    document["data"] = {"background": None, "observed": {"files": [{"path": events.as_uri()}]}}
    spec = load_spec(write(tmp_path, document))
    assert spec.data.observed.files[0].files() == [str(events)]
    document["data"]["observed"]["files"] = [{"path": "gs://bucket/run/*.parquet"}]
    assert load_spec(write(tmp_path, document)).data.observed.files[0].path.startswith("gs://")
    refused = {
        "ftp://host/run.parquet": "pyarrow reads no ftp:// URIs; allowed: a local path or a URI",
        "file://host/run.parquet": "a file:// URI names a file on this machine",
        f"file://{tmp_path}/absent.parquet": "matches no file",
    }
    for path, fragment in refused.items():
        document["data"]["observed"]["files"] = [{"path": path}]
        with pytest.raises(SpecError) as caught:
            load_spec(write(tmp_path, document))
        assert [loc for loc, _ in caught.value.problems] == ["data.observed.files.0.path"]
        assert fragment in str(caught.value)


def test_a_root_file_without_a_preset_is_refused_before_anything_runs(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "bkg.root").write_bytes(b"")
    _events_file(tmp_path / "data" / "more.parquet")
    store = tmp_path / "store"
    document = base_spec(store)
    document["data"]["background"] = {"files": [{"path": "data/*", "xsec_pb": 10}]}
    file = write(tmp_path, document)
    result = CliRunner().invoke(app, ["run", str(file)])
    assert result.exit_code == 2, result.output
    assert "data.background.files.0.preset:" in result.stderr
    assert "bkg.root is a ROOT file" in result.stderr
    assert "allowed: nanoaod, delphes, heptutorial, dimuon" in result.stderr
    assert not store.exists()
    document["data"]["background"]["files"][0]["preset"] = "delphes"
    assert load_spec(write(tmp_path, document)).data.background.files[0].preset == "delphes"
    document["data"]["background"]["files"] = [{"path": "data/more.parquet"}]
    assert load_spec(write(tmp_path, document)).data.background.files[0].preset is None
