"""Import of published pyhf likelihoods: tarball, folders, patchsets, and one clear error each."""

from __future__ import annotations

import json
from pathlib import Path

import pyhf
import pytest

from searches.likelihoods import LikelihoodImportError, SignalPatch, load_likelihoods
from searches.testing import SBOTTOM_TARBALL

TARBALL = SBOTTOM_TARBALL


@pytest.fixture(scope="module")
def regions(shared_data: Path):
    return {r.name: r for r in load_likelihoods(shared_data / TARBALL)}


def _patchset(background: dict, patches: list[SignalPatch]) -> dict:
    return {
        "metadata": {
            "name": "sbottom",
            "references": {"hepdata": "ins1748602"},
            "description": "test patchset",
            "digests": {"sha256": pyhf.utils.digest(background)},
            "labels": ["m_sbottom", "m_chi2", "m_chi1"],
        },
        "patches": [
            {
                "metadata": {"name": p.name, "values": list(p.parameters.values())},
                "patch": p.to_json(),
            }
            for p in patches
        ],
        "version": "1.0.0",
    }


def test_tarball_read_in_place(regions):
    assert {k: len(v.patches) for k, v in regions.items()} == {
        "RegionA": 217,
        "RegionB": 218,
        "RegionC": 215,
    }
    patch = regions["RegionA"].patch("sbottom_1300_205_60")
    assert patch.parameters == {"m_sbottom": 1300.0, "m_chi2": 205.0, "m_chi1": 60.0}
    spec = regions["RegionA"].workspace(patch)
    assert any(s["name"].startswith("sbottom") for c in spec["channels"] for s in c["samples"])
    assert regions["RegionA"].digest == pyhf.utils.digest(dict(regions["RegionA"].background))


def test_patchset_folder_round_trip(regions, tmp_path):
    region = regions["RegionB"]
    (tmp_path / "BkgOnly.json").write_text(json.dumps(dict(region.background)))
    (tmp_path / "patchset.json").write_text(
        json.dumps(_patchset(dict(region.background), list(region.patches[:3])))
    )
    (loaded,) = load_likelihoods(tmp_path / "BkgOnly.json")
    assert [p.name for p in loaded.patches] == [p.name for p in region.patches[:3]]
    assert loaded.patches[0].parameters == dict(region.patches[0].parameters)


def test_digest_mismatch_is_rejected(regions, tmp_path):
    other = dict(regions["RegionA"].background)
    (tmp_path / "BkgOnly.json").write_text(json.dumps(dict(regions["RegionB"].background)))
    (tmp_path / "patchset.json").write_text(
        json.dumps(_patchset(other, list(regions["RegionA"].patches[:1])))
    )
    with pytest.raises(LikelihoodImportError, match=r"patchset\.json: digest mismatch"):
        load_likelihoods(tmp_path)


def test_malformed_json_names_file_and_line(regions, tmp_path):
    (tmp_path / "BkgOnly.json").write_text(json.dumps(dict(regions["RegionB"].background)))
    (tmp_path / "patch.sbottom_1_2_3.json").write_text('[{"op": "add", "path": ')
    with pytest.raises(
        LikelihoodImportError, match=r"patch\.sbottom_1_2_3\.json: malformed JSON at line 1"
    ):
        load_likelihoods(tmp_path)


def test_missing_channel_in_patch(regions):
    region = regions["RegionB"]
    bad = SignalPatch("bad", {}, ({"op": "remove", "path": "/channels/7"},), "patch.bad.json")
    with pytest.raises(LikelihoodImportError, match="missing channel or sample"):
        region.workspace(bad)


def test_missing_signal_sample(regions):
    # The published region-B point 1500_1495_60 removes a channel and adds no signal at all.
    with pytest.raises(LikelihoodImportError, match=r"missing signal sample.*mu_SIG"):
        regions["RegionB"].workspace("sbottom_1500_1495_60")


def test_channel_without_observations(regions, tmp_path):
    spec = json.loads(json.dumps(dict(regions["RegionB"].background)))
    spec["observations"] = spec["observations"][1:]
    (tmp_path / "BkgOnly.json").write_text(json.dumps(spec))
    (tmp_path / "patch.x_1.json").write_text("[]")
    with pytest.raises(LikelihoodImportError, match="has no observations"):
        load_likelihoods(tmp_path)


def test_sample_with_wrong_bin_count(regions, tmp_path):
    spec = json.loads(json.dumps(dict(regions["RegionA"].background)))
    spec["channels"][0]["samples"][0]["data"].append(1.0)
    (tmp_path / "BkgOnly.json").write_text(json.dumps(spec))
    (tmp_path / "patch.x_1.json").write_text("[]")
    with pytest.raises(LikelihoodImportError, match="bins, the channel's observations have 3"):
        load_likelihoods(tmp_path)


def test_not_a_workspace(tmp_path):
    (tmp_path / "BkgOnly.json").write_text('{"channels": []}')
    with pytest.raises(LikelihoodImportError, match="not a valid pyhf workspace"):
        load_likelihoods(tmp_path)
    with pytest.raises(LikelihoodImportError, match="no such file"):
        load_likelihoods(tmp_path / "nope.tar.gz")
