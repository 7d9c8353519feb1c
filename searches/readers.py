"""Readers that turn ROOT (TTree or RNTuple) and Parquet files into the event schema.

Experiments write their events in many layouts; a declarative :class:`BranchMap` says which
branch holds which quantity, so that one reader serves CMS NanoAOD, Delphes, the classic HEP
tutorial ntuples and any flat ntuple a collaboration brings. Presets ship for the common layouts
(:data:`PRESETS`), and a campaign file names one of them for each ROOT input; a custom
:class:`BranchMap` is for the Python API.

Every problem with an input (a missing, corrupt or truncated file, a tree that is not there, a
branch that is missing or has the wrong type) raises one :class:`InputFileError` or
:class:`BranchMapError`, both :class:`~searches.events.EventValidationError`, naming the file
and the branch, and listing what exists instead.

Simulated samples are brought to "events at the campaign luminosity" by :func:`normalise`
(weight × σ × L / Σw), configured per sample by :class:`Sample`.
"""

from __future__ import annotations

import difflib
import glob
import operator
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import awkward as ak
import numpy as np
import uproot
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from searches.events import (
    COLLECTIONS,
    EventValidationError,
    concatenate,
    make_collection,
    make_events,
    read_parquet,
    validate_events,
)

DEFAULT_STEP_SIZE = 100_000
_MAX_ABS_ETA = 10.0
_PB_TO_FB = 1000.0


class InputFileError(EventValidationError):
    """A file that cannot be read: absent, corrupt, truncated, or without the mapped tree."""


class BranchMapError(EventValidationError):
    """A branch map that does not fit a file: a missing or wrong-typed branch, an unknown preset."""


# --------------------------------------------------------------------------------------------
# Branch maps
# --------------------------------------------------------------------------------------------

_OPERATORS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
    "&": lambda values, mask: (values.astype(np.int64) & int(mask)) != 0,
}
_CUT_PATTERN = re.compile(
    r"^\s*(?P<branch>[^\s<>=!&]+)\s*(?:(?P<op>>=|<=|==|!=|>|<|&)\s*(?P<value>[-+0-9.eE]+))?\s*$"
)


def parse_cut(text: str) -> tuple[str, str | None, float | None]:
    """Split ``"Jet_btagCSVV2 > 0.8"`` into ``(branch, op, value)``; a bare branch is a flag.

    A bare branch name means "non-zero" (boolean or integer flags such as ``Jet_ID``); ``&``
    tests bits of an integer mask (Delphes ``Jet.BTag & 1``).
    """
    match = _CUT_PATTERN.match(text)
    if match is None:
        raise ValueError(
            f"cannot parse cut '{text}'; expected 'branch', or 'branch OP number' with OP one of "
            f"{', '.join(_OPERATORS)}"
        )
    value = match["value"]
    if match["op"] is not None:
        try:
            number = float(value)
        except ValueError as err:
            raise ValueError(f"cut '{text}': '{value}' is not a number") from err
        return match["branch"], match["op"], number
    return match["branch"], None, None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CollectionMap(_Strict):
    """Where one object collection lives: per-object branches, or constants for fixed values.

    Give either ``pt``/``eta``/``phi``/``mass`` or the Cartesian ``px``/``py``/``pz``/``energy``
    (converted to pt/eta/phi/mass). ``mass`` may be a number (Delphes stores no lepton masses).
    ``charge`` may be a branch or a constant. ``btag`` is a working point on a discriminant
    (``"Jet_btagCSVV2 > 0.8"``) or a flag branch (``"Jet.BTag & 1"``, ``"Jet_isB"``). ``where``
    keeps only objects passing a cut (Delphes taus are jets with ``Jet.TauTag``).
    ``tau1``/``tau2``/``tau3`` (N-subjettiness) give ``tau21``/``tau32`` for fat jets.
    """

    pt: str | None = None
    eta: str | None = None
    phi: str | None = None
    mass: str | float | None = None
    px: str | None = None
    py: str | None = None
    pz: str | None = None
    energy: str | None = None
    charge: str | int | None = None
    btag: str | None = None
    where: str | None = None
    tau1: str | None = None
    tau2: str | None = None
    tau3: str | None = None
    optional: bool = False

    @field_validator("btag", "where")
    @classmethod
    def _valid_cut(cls, value: str | None) -> str | None:
        if value is not None:
            parse_cut(value)
        return value

    @model_validator(mode="after")
    def _one_layout(self) -> CollectionMap:
        polar = (self.pt, self.eta, self.phi, self.mass)
        cartesian = (self.px, self.py, self.pz, self.energy)
        if all(v is not None for v in polar) and all(v is None for v in cartesian):
            return self
        if all(v is not None for v in cartesian) and all(v is None for v in polar):
            return self
        raise ValueError(
            "give either all of pt, eta, phi, mass or all of px, py, pz, energy (not a mixture)"
        )

    def is_cartesian(self) -> bool:
        """True when the map gives px/py/pz/energy."""
        return self.px is not None

    def branches(self) -> list[str]:
        """Every branch this collection reads."""
        names: list[str] = [
            v
            for v in (self.pt, self.eta, self.phi, self.mass, self.px, self.py, self.pz)
            if isinstance(v, str)
        ]
        names += [v for v in (self.energy, self.tau1, self.tau2, self.tau3) if v is not None]
        if isinstance(self.charge, str):
            names.append(self.charge)
        for cut in (self.btag, self.where):
            if cut is not None:
                names.append(parse_cut(cut)[0])
        return list(dict.fromkeys(names))


class MetMap(_Strict):
    """Missing transverse momentum: ``pt`` and ``phi`` branches, or ``px`` and ``py``."""

    pt: str | None = None
    phi: str | None = None
    px: str | None = None
    py: str | None = None

    @model_validator(mode="after")
    def _one_layout(self) -> MetMap:
        if (self.pt is None) == (self.px is None) or (self.pt is None) != (self.phi is None):
            raise ValueError("give either pt and phi, or px and py")
        if (self.px is None) != (self.py is None):
            raise ValueError("give either pt and phi, or px and py")
        return self

    def branches(self) -> list[str]:
        """Every branch the MET reads."""
        return [v for v in (self.pt, self.phi, self.px, self.py) if v is not None]


class BranchMap(_Strict):
    """Which branches of which tree make the event schema.

    Collections left out are empty in every event (a dimuon skim has no jets); a missing ``met``
    gives MET 0; a missing ``weight`` gives weight 1. ``weight_optional`` lets one map serve
    both simulation (with a generator weight) and recorded data (without).
    """

    tree: str
    electron: CollectionMap | None = None
    muon: CollectionMap | None = None
    tau: CollectionMap | None = None
    photon: CollectionMap | None = None
    jet: CollectionMap | None = None
    fatjet: CollectionMap | None = None
    met: MetMap | None = None
    weight: str | None = None
    weight_optional: bool = False

    @model_validator(mode="after")
    def _fatjet_has_substructure(self) -> BranchMap:
        if self.fatjet is not None and None in (
            self.fatjet.tau1,
            self.fatjet.tau2,
            self.fatjet.tau3,
        ):
            raise ValueError("fatjet needs tau1, tau2 and tau3 (N-subjettiness) branches")
        return self

    def collections(self) -> dict[str, CollectionMap]:
        """The mapped collections by schema name."""
        names = (*COLLECTIONS, "fatjet")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    def branches(self) -> list[str]:
        """Every branch the map reads (optional ones included)."""
        names: list[str] = []
        for collection in self.collections().values():
            names += collection.branches()
        if self.met is not None:
            names += self.met.branches()
        if self.weight is not None:
            names.append(self.weight)
        return list(dict.fromkeys(names))


def _polar(prefix: str, sep: str, *, mass: str | float | None = None, charge: bool = True) -> dict:
    fields = {f: f"{prefix}{sep}{f}" for f in ("pt", "eta", "phi", "mass")}
    if mass is not None:
        fields["mass"] = mass
    if charge:
        fields["charge"] = f"{prefix}{sep}charge"
    return fields


def _cartesian(prefix: str, *, charge: bool) -> dict:
    fields = {
        "px": f"{prefix}_Px",
        "py": f"{prefix}_Py",
        "pz": f"{prefix}_Pz",
        "energy": f"{prefix}_E",
    }
    if charge:
        fields["charge"] = f"{prefix}_Charge"
    return fields


def _delphes(prefix: str, *, mass: str | float, charge: bool = True) -> dict:
    fields: dict[str, Any] = {
        "pt": f"{prefix}.PT",
        "eta": f"{prefix}.Eta",
        "phi": f"{prefix}.Phi",
        "mass": mass,
    }
    if charge:
        fields["charge"] = f"{prefix}.Charge"
    return fields


_ELECTRON_MASS = 0.000511
_MUON_MASS = 0.10566

PRESETS: dict[str, BranchMap] = {
    # CMS NanoAOD. CSVv2 medium working point of 2015/2016 (0.8); FatJets only where present.
    "nanoaod": BranchMap(
        tree="Events",
        electron=CollectionMap(**_polar("Electron", "_")),
        muon=CollectionMap(**_polar("Muon", "_")),
        tau=CollectionMap(**_polar("Tau", "_")),
        photon=CollectionMap(**_polar("Photon", "_", charge=False)),
        jet=CollectionMap(**_polar("Jet", "_", charge=False), btag="Jet_btagCSVV2 > 0.8"),
        fatjet=CollectionMap(
            **_polar("FatJet", "_", charge=False),
            tau1="FatJet_tau1",
            tau2="FatJet_tau2",
            tau3="FatJet_tau3",
            optional=True,
        ),
        met=MetMap(pt="MET_pt", phi="MET_phi"),
        weight="genWeight",
        weight_optional=True,
    ),
    # Delphes (default CMS/ATLAS cards): leptons carry no mass branch; taus are tau-tagged jets.
    "delphes": BranchMap(
        tree="Delphes",
        electron=CollectionMap(**_delphes("Electron", mass=_ELECTRON_MASS)),
        muon=CollectionMap(**_delphes("Muon", mass=_MUON_MASS)),
        tau=CollectionMap(**_delphes("Jet", mass="Jet.Mass"), where="Jet.TauTag & 1"),
        photon=CollectionMap(**_delphes("Photon", mass=0.0, charge=False)),
        jet=CollectionMap(
            **_delphes("Jet", mass="Jet.Mass", charge=False),
            btag="Jet.BTag & 1",
            where="Jet.TauTag == 0",
        ),
        met=MetMap(pt="MissingET.MET", phi="MissingET.Phi"),
        weight="Event.Weight",
        weight_optional=True,
    ),
    # The classic CMS HEP-tutorial ntuples: Cartesian four-vectors, jets passing Jet_ID,
    # b-tag on the tutorial's discriminant (untagged jets hold -1) at 1.74.
    "heptutorial": BranchMap(
        tree="events",
        electron=CollectionMap(**_cartesian("Electron", charge=True)),
        muon=CollectionMap(**_cartesian("Muon", charge=True)),
        photon=CollectionMap(**_cartesian("Photon", charge=False)),
        jet=CollectionMap(
            **_cartesian("Jet", charge=False), btag="Jet_btag > 1.74", where="Jet_ID"
        ),
        met=MetMap(px="MET_px", py="MET_py"),
        weight="EventWeight",
    ),
    # A muon-only skim in NanoAOD naming (CMS open-data dimuon files, TTree or RNTuple).
    "dimuon": BranchMap(tree="Events", muon=CollectionMap(**_polar("Muon", "_"))),
}


def get_preset(name: str) -> BranchMap:
    """The branch map of a preset, or a :class:`BranchMapError` listing the allowed presets."""
    try:
        return PRESETS[name]
    except KeyError:
        raise BranchMapError(
            "<presets>", "preset", f"unknown preset '{name}'; allowed: {', '.join(PRESETS)}"
        ) from None


def resolve_branch_map(
    *, preset: str | None = None, branch_map: BranchMap | dict | None = None
) -> BranchMap:
    """The map given directly, or the preset named; exactly one of the two."""
    if (preset is None) == (branch_map is None):
        raise BranchMapError(
            "<arguments>",
            "preset/branch_map",
            f"give exactly one of preset (allowed: {', '.join(PRESETS)}) or branch_map",
        )
    if preset is not None:
        return get_preset(preset)
    if isinstance(branch_map, BranchMap):
        return branch_map
    return BranchMap.model_validate(branch_map)


# --------------------------------------------------------------------------------------------
# ROOT access
# --------------------------------------------------------------------------------------------


def _one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


class _Source:
    """One opened ROOT file and its tree (TTree or RNTuple), with errors that name both."""

    def __init__(self, path: str | os.PathLike[str], branch_map: BranchMap) -> None:
        self.path = str(path)
        self.branch_map = branch_map
        remote = "://" in self.path
        if not remote and not Path(path).is_file():
            raise InputFileError(self.path, "<file>", "does not exist or is not a file")
        options = {} if remote else {"handler": uproot.source.file.MemmapSource}
        try:
            self.file = uproot.open(path, **options)
        except Exception as err:
            raise InputFileError(
                self.path,
                "<file>",
                f"not a readable ROOT file (corrupt or truncated?): {_one_line(err)}",
            ) from err
        try:
            tree = self.file[branch_map.tree]
        except Exception as err:
            self.file.close()
            if isinstance(err, KeyError):
                keys = sorted({k.split(";")[0] for k in self.file.keys(recursive=False)})
                raise BranchMapError(
                    self.path,
                    branch_map.tree,
                    f"no such tree; objects in the file: {', '.join(keys) or 'none'}",
                ) from err
            raise InputFileError(
                self.path,
                branch_map.tree,
                f"cannot read the tree (corrupt or truncated file?): {_one_line(err)}",
            ) from err
        if not isinstance(tree, (uproot.behaviors.TTree.TTree, uproot.behaviors.RNTuple.RNTuple)):
            self.file.close()
            raise BranchMapError(
                self.path,
                branch_map.tree,
                f"is a {type(tree).__name__}, not a TTree or RNTuple",
            )
        self.tree = tree
        self.kind: Literal["TTree", "RNTuple"] = (
            "RNTuple" if isinstance(tree, uproot.behaviors.RNTuple.RNTuple) else "TTree"
        )
        self.num_entries = int(tree.num_entries)
        self._keys: list[str] | None = None

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> _Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def keys(self) -> list[str]:
        if self._keys is None:
            self._keys = [str(k) for k in self.tree.keys(recursive=True)]
        return self._keys

    def has(self, branch: str) -> bool:
        try:
            self.tree[branch]
        except KeyError:
            return False
        return True

    def missing_error(self, branch: str) -> BranchMapError:
        keys = self.keys()
        leaves = {k.rsplit("/", 1)[-1]: k for k in keys}
        similar = difflib.get_close_matches(branch, list(leaves), n=6, cutoff=0.6)
        stem = re.split(r"[._/]", branch)[0]
        similar += [k for k in leaves if k.startswith(stem) and k not in similar][:6]
        if similar:
            hint = f"similar: {', '.join(similar[:10])}"
        elif len(keys) <= 15:
            hint = f"branches: {', '.join(keys)}"
        else:
            hint = f"none similar among {len(keys)} branches"
        return BranchMapError(
            self.path,
            branch,
            f"no such branch in {self.kind} '{self.branch_map.tree}'; {hint}{self._preset_hint()}",
        )

    def _preset_hint(self) -> str:
        names = [name for name, bm in PRESETS.items() if bm == self.branch_map]
        if not names:
            return ""
        return f" (preset '{names[0]}'; allowed presets: {', '.join(PRESETS)})"

    def check_branches(self) -> None:
        """Raise for the first required branch that is missing (before reading any data)."""
        for name in self.required_branches():
            if not self.has(name):
                raise self.missing_error(name)

    def required_branches(self) -> list[str]:
        bm = self.branch_map
        names: list[str] = []
        for collection in bm.collections().values():
            if not collection.optional:
                names += collection.branches()
        if bm.met is not None:
            names += bm.met.branches()
        if bm.weight is not None and not bm.weight_optional:
            names.append(bm.weight)
        return list(dict.fromkeys(names))

    def read(self, branch: str, start: int, stop: int) -> ak.Array:
        try:
            field = self.tree[branch]
        except KeyError:
            raise self.missing_error(branch) from None
        try:
            return field.array(entry_start=start, entry_stop=stop, library="ak")
        except Exception as err:
            raise InputFileError(
                self.path,
                branch,
                f"cannot read entries {start}..{stop} (corrupt or truncated file, or a type "
                f"uproot cannot interpret): {_one_line(err)}",
            ) from err


def _numeric(array: ak.Array, source: _Source, branch: str, *, jagged: bool) -> ak.Array:
    """Check a branch has the expected shape (per object or per event) and a numeric type."""
    ndim = array.ndim
    if jagged and ndim != 2:
        raise BranchMapError(
            source.path, branch, f"expected one value per object (var * number), got {array.type}"
        )
    if not jagged and ndim not in (1, 2):
        raise BranchMapError(
            source.path, branch, f"expected one value per event (number), got {array.type}"
        )
    try:
        flat = ak.to_numpy(ak.flatten(array, axis=None))
    except (TypeError, ValueError) as err:
        raise BranchMapError(
            source.path, branch, f"expected a numeric branch, got {array.type}"
        ) from err
    if flat.dtype.kind not in "biuf":
        raise BranchMapError(source.path, branch, f"expected a numeric branch, got {flat.dtype}")
    return array


def _per_event(array: ak.Array, source: _Source, branch: str, *, default: float) -> np.ndarray:
    """A per-event value; Delphes keeps them in one-element collections (MissingET, Event)."""
    _numeric(array, source, branch, jagged=False)
    if array.ndim == 2:
        counts = ak.to_numpy(ak.num(array))
        if counts.size and counts.max() > 1:
            raise BranchMapError(
                source.path,
                branch,
                f"expected one value per event, found up to {counts.max()} in one event",
            )
        array = ak.fill_none(ak.firsts(array), default)
    return ak.to_numpy(array).astype(np.float64)


class _ChunkReader:
    """Reads one entry range of a source, each branch once."""

    def __init__(self, source: _Source, start: int, stop: int) -> None:
        self.source = source
        self.start = start
        self.stop = stop
        self._cache: dict[str, ak.Array] = {}

    def __call__(self, branch: str) -> ak.Array:
        if branch not in self._cache:
            self._cache[branch] = self.source.read(branch, self.start, self.stop)
        return self._cache[branch]

    def objects(self, branch: str) -> ak.Array:
        return _numeric(self(branch), self.source, branch, jagged=True)


def _cut_mask(reader: _ChunkReader, cut: str) -> ak.Array:
    branch, op, value = parse_cut(cut)
    values = reader.objects(branch)
    flat = ak.to_numpy(ak.flatten(values))
    if op == "&" and flat.dtype.kind not in "biu":
        raise BranchMapError(
            reader.source.path, branch, f"bit test '&' needs an integer branch, got {flat.dtype}"
        )
    mask = flat != 0 if op is None else _OPERATORS[op](flat, value)
    return ak.unflatten(np.asarray(mask, dtype=bool), ak.num(values))


def _same_counts(reader: _ChunkReader, name: str, arrays: dict[str, ak.Array]) -> np.ndarray:
    counts = None
    first = None
    for branch, array in arrays.items():
        this = ak.to_numpy(ak.num(array))
        if counts is None:
            counts, first = this, branch
        elif not np.array_equal(counts, this):
            raise BranchMapError(
                reader.source.path,
                branch,
                f"has a different number of {name} objects per event than '{first}' "
                "(branches of one collection must have equal lengths)",
            )
    assert counts is not None
    return counts


def _collection(reader: _ChunkReader, name: str, cmap: CollectionMap) -> ak.Array:
    """Build one schema collection, objects sorted by descending pt, shape ``n_events * var``."""
    if cmap.is_cartesian():
        raw = {k: getattr(cmap, k) for k in ("px", "py", "pz", "energy")}
    else:
        raw = {k: getattr(cmap, k) for k in ("pt", "eta", "phi")}
        if isinstance(cmap.mass, str):
            raw["mass"] = cmap.mass
    for extra in ("tau1", "tau2", "tau3"):
        if getattr(cmap, extra) is not None:
            raw[extra] = getattr(cmap, extra)
    if isinstance(cmap.charge, str):
        raw["charge"] = cmap.charge
    arrays = {key: reader.objects(branch) for key, branch in raw.items()}
    by_branch = {raw[k]: v for k, v in arrays.items()}
    if cmap.btag is not None:
        by_branch[f"btag: {cmap.btag}"] = _cut_mask(reader, cmap.btag)
    if cmap.where is not None:
        by_branch[f"where: {cmap.where}"] = _cut_mask(reader, cmap.where)
    _same_counts(reader, name, by_branch)

    keep = None if cmap.where is None else by_branch[f"where: {cmap.where}"]
    btag = None if cmap.btag is None else by_branch[f"btag: {cmap.btag}"]
    if keep is not None:
        arrays = {k: v[keep] for k, v in arrays.items()}
        btag = None if btag is None else btag[keep]
    counts = ak.to_numpy(ak.num(next(iter(arrays.values()))))
    flat = {k: ak.to_numpy(ak.flatten(v)).astype(np.float64) for k, v in arrays.items()}

    if cmap.is_cartesian():
        pt = np.hypot(flat["px"], flat["py"])
        phi = np.arctan2(flat["py"], flat["px"])
        with np.errstate(divide="ignore", invalid="ignore"):
            eta = np.arcsinh(np.where(pt > 0, flat["pz"] / np.where(pt > 0, pt, 1.0), 0.0))
        eta = np.where(pt > 0, eta, np.sign(flat["pz"]) * _MAX_ABS_ETA)
        eta = np.clip(eta, -_MAX_ABS_ETA, _MAX_ABS_ETA)
        p2 = pt**2 + flat["pz"] ** 2
        mass = np.sqrt(np.clip(flat["energy"] ** 2 - p2, 0.0, None))
    else:
        pt, eta, phi = flat["pt"], flat["eta"], flat["phi"]
        mass = flat["mass"] if "mass" in flat else np.full(pt.shape, float(cmap.mass))
    columns: dict[str, np.ndarray] = {
        "pt": pt.astype(np.float32),
        "eta": eta.astype(np.float32),
        "phi": phi.astype(np.float32),
        "mass": np.clip(mass, 0.0, None).astype(np.float32),
    }
    if name in ("electron", "muon", "tau"):
        columns["charge"] = _charges(reader, cmap, flat, pt.shape)
    if name == "jet":
        columns["btag"] = (
            np.zeros(pt.shape, dtype=bool) if btag is None else ak.to_numpy(ak.flatten(btag))
        )
    if name == "fatjet":
        with np.errstate(divide="ignore", invalid="ignore"):
            tau21 = np.where(flat["tau1"] > 0, flat["tau2"] / flat["tau1"], 0.0)
            tau32 = np.where(flat["tau2"] > 0, flat["tau3"] / flat["tau2"], 0.0)
        columns["tau21"] = tau21.astype(np.float32)
        columns["tau32"] = tau32.astype(np.float32)
    return _sorted_by_pt(counts, columns)


def _charges(
    reader: _ChunkReader, cmap: CollectionMap, flat: dict[str, np.ndarray], shape: tuple
) -> np.ndarray:
    if not isinstance(cmap.charge, str):
        return np.full(shape, int(cmap.charge or 0), dtype=np.int8)
    values = flat["charge"]
    if not np.all(values == np.round(values)) or (values.size and np.abs(values).max() > 1):
        bad = values[(values != np.round(values)) | (np.abs(values) > 1)][0]
        raise BranchMapError(
            reader.source.path, cmap.charge, f"charge {bad} not allowed; allowed: -1, 0, 1"
        )
    return values.astype(np.int8)


def _sorted_by_pt(counts: np.ndarray, columns: dict[str, np.ndarray]) -> ak.Array:
    pt = ak.unflatten(columns["pt"], counts)
    order = ak.argsort(pt, axis=1, ascending=False, stable=True)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    index = ak.to_numpy(ak.flatten(order + offsets[:-1]))
    return make_collection(counts, **{k: v[index] for k, v in columns.items()})


def _met(reader: _ChunkReader, met: MetMap | None, n: int) -> tuple[np.ndarray, np.ndarray]:
    if met is None:
        return np.zeros(n), np.zeros(n)
    if met.pt is not None:
        pt = _per_event(reader(met.pt), reader.source, met.pt, default=0.0)
        phi = _per_event(reader(met.phi), reader.source, met.phi, default=0.0)
        return pt, phi
    px = _per_event(reader(met.px), reader.source, met.px, default=0.0)
    py = _per_event(reader(met.py), reader.source, met.py, default=0.0)
    return np.hypot(px, py), np.arctan2(py, px)


def _events(source: _Source, start: int, stop: int) -> ak.Array:
    reader = _ChunkReader(source, start, stop)
    bm = source.branch_map
    n = stop - start
    collections = {}
    for name, cmap in bm.collections().items():
        if cmap.optional and not all(source.has(b) for b in cmap.branches()):
            continue
        collections[name] = _collection(reader, name, cmap)
    met, met_phi = _met(reader, bm.met, n)
    if bm.weight is not None and (not bm.weight_optional or source.has(bm.weight)):
        weight = _per_event(reader(bm.weight), source, bm.weight, default=1.0)
    else:
        weight = np.ones(n)
    events = make_events(collections, met=met, met_phi=met_phi, weight=weight)
    return validate_events(events, source=f"{source.path} (entries {start}..{stop})")


def _entry_range(num_entries: int, start: int | None, stop: int | None) -> tuple[int, int]:
    start = 0 if start is None else (start + num_entries if start < 0 else start)
    stop = num_entries if stop is None else (stop + num_entries if stop < 0 else stop)
    return max(0, min(start, num_entries)), max(0, min(stop, num_entries))


def iterate_root(
    path: str | os.PathLike[str],
    *,
    preset: str | None = None,
    branch_map: BranchMap | dict | None = None,
    entry_start: int | None = None,
    entry_stop: int | None = None,
    step_size: int = DEFAULT_STEP_SIZE,
) -> Iterator[ak.Array]:
    """Yield validated event chunks of at most ``step_size`` events from one ROOT file.

    Only one chunk is in memory at a time, so files larger than memory can be processed.

    Raises:
        InputFileError: the file is absent, corrupt or truncated (names the file and branch).
        BranchMapError: a mapped branch is missing (lists similar branches) or mistyped.
    """
    if step_size < 1:
        raise ValueError(f"step_size must be a positive number of events, got {step_size}")
    bm = resolve_branch_map(preset=preset, branch_map=branch_map)
    with _Source(path, bm) as source:
        source.check_branches()
        start, stop = _entry_range(source.num_entries, entry_start, entry_stop)
        if start >= stop:
            raise InputFileError(
                source.path,
                bm.tree,
                f"no events in entries {start}..{stop} ({source.num_entries} in the file)",
            )
        for begin in range(start, stop, step_size):
            yield _events(source, begin, min(begin + step_size, stop))


def read_root(
    path: str | os.PathLike[str],
    *,
    preset: str | None = None,
    branch_map: BranchMap | dict | None = None,
    entry_start: int | None = None,
    entry_stop: int | None = None,
    step_size: int = DEFAULT_STEP_SIZE,
) -> ak.Array:
    """Read a ROOT file (TTree or RNTuple, detected) into one validated event array.

    Args:
        path: the ROOT file.
        preset: a name from :data:`PRESETS` (``nanoaod``, ``delphes``, ``heptutorial``,
            ``dimuon``), or
        branch_map: a :class:`BranchMap` (or its dict form from a campaign file).
        entry_start, entry_stop: entry range (Python slice semantics, negatives allowed).
        step_size: events read per chunk (bounds the temporary memory of the conversion).

    Returns:
        Events of the schema, shape ``n_events``, objects sorted by descending pt.
    """
    chunks = list(
        iterate_root(
            path,
            preset=preset,
            branch_map=branch_map,
            entry_start=entry_start,
            entry_stop=entry_stop,
            step_size=step_size,
        )
    )
    return chunks[0] if len(chunks) == 1 else concatenate(chunks)


def inspect_root(
    path: str | os.PathLike[str],
    *,
    preset: str | None = None,
    branch_map: BranchMap | dict | None = None,
) -> tuple[Literal["TTree", "RNTuple"], int]:
    """Open a file and check its tree and branches without reading data.

    Returns:
        ``(kind, num_entries)`` with kind ``"TTree"`` or ``"RNTuple"``.
    """
    bm = resolve_branch_map(preset=preset, branch_map=branch_map)
    with _Source(path, bm) as source:
        source.check_branches()
        return source.kind, source.num_entries


def sum_of_weights(
    path: str | os.PathLike[str],
    *,
    preset: str | None = None,
    branch_map: BranchMap | dict | None = None,
    step_size: int = 1_000_000,
) -> float:
    """Σ of the raw event weights of one file (its entry count when the map has no weight)."""
    bm = resolve_branch_map(preset=preset, branch_map=branch_map)
    with _Source(path, bm) as source:
        if bm.weight is None or (bm.weight_optional and not source.has(bm.weight)):
            return float(source.num_entries)
        total = 0.0
        for begin in range(0, source.num_entries, step_size):
            stop = min(begin + step_size, source.num_entries)
            weights = _per_event(source.read(bm.weight, begin, stop), source, bm.weight, default=1)
            total += float(weights.sum())
        return total


PARQUET_SUFFIXES = (".parquet", ".parq")
_READERS = (".root", *PARQUET_SUFFIXES)


def is_parquet(path: str | os.PathLike[str]) -> bool:
    """Whether a path or URI names a Parquet file (by its suffix)."""
    return Path(path).suffix.lower() in PARQUET_SUFFIXES


def read_events(
    path: str | os.PathLike[str],
    *,
    preset: str | None = None,
    branch_map: BranchMap | dict | None = None,
    entry_start: int | None = None,
    entry_stop: int | None = None,
    step_size: int = DEFAULT_STEP_SIZE,
) -> ak.Array:
    """Read events from ROOT (through a branch map) or Parquet (the schema), by extension."""
    suffix = Path(path).suffix.lower()
    if suffix == ".root":
        return read_root(
            path,
            preset=preset,
            branch_map=branch_map,
            entry_start=entry_start,
            entry_stop=entry_stop,
            step_size=step_size,
        )
    if is_parquet(path):
        if preset is not None or branch_map is not None:
            raise BranchMapError(
                str(path), "preset/branch_map", "Parquet files hold the schema; give no branch map"
            )
        events = read_parquet(path)
        if entry_start is not None or entry_stop is not None:
            events = events[entry_start:entry_stop]
            if len(events) == 0:
                raise InputFileError(str(path), "<root>", "no events in the requested range")
        return events
    raise InputFileError(
        str(path), "<extension>", f"unknown file type '{suffix}'; allowed: {', '.join(_READERS)}"
    )


# --------------------------------------------------------------------------------------------
# Samples and normalisation
# --------------------------------------------------------------------------------------------


def normalise(
    events: ak.Array, *, xsec_pb: float, luminosity_fb: float, sum_of_weights: float
) -> ak.Array:
    """Scale weights to events at the luminosity: ``w · σ[fb] · L[fb⁻¹] / Σw``.

    ``sum_of_weights`` is the Σ of raw weights of the *whole generated sample* (all files, before
    any selection), so that normalising each chunk separately gives the same answer as
    normalising everything at once.
    """
    if xsec_pb <= 0 or luminosity_fb <= 0 or sum_of_weights == 0 or not np.isfinite(sum_of_weights):
        raise ValueError(
            f"normalise needs xsec_pb > 0, luminosity_fb > 0 and a finite non-zero "
            f"sum_of_weights; got {xsec_pb}, {luminosity_fb}, {sum_of_weights}"
        )
    factor = xsec_pb * _PB_TO_FB * luminosity_fb / sum_of_weights
    return ak.with_field(events, events["weight"] * factor, "weight")


_SAMPLE_NAME = r"^[A-Za-z0-9_.+-]+$"


class Sample(_Strict):
    """One sample on disk: its files, how to read them, and how to normalise them.

    For simulation (``kind='mc'``) with ``xsec_pb``, weights become ``w σ L / Σw`` where Σw is
    ``sum_of_weights``, else ``n_generated``, else the Σ of raw weights over the files. Without
    ``xsec_pb`` the weight branch is taken as already normalised: to ``weights_luminosity_fb``
    when given (rescaled to the campaign luminosity), else to the campaign luminosity itself.
    Recorded data (``kind='data'``) keeps weight 1 (or its weight branch) unscaled.
    """

    name: Annotated[str, Field(pattern=_SAMPLE_NAME, max_length=100)]
    paths: Annotated[tuple[str, ...], Field(min_length=1)]
    preset: str | None = None
    branch_map: BranchMap | None = None
    kind: Literal["data", "mc"] = "mc"
    xsec_pb: Annotated[float, Field(gt=0)] | None = None
    sum_of_weights: float | None = None
    n_generated: Annotated[int, Field(gt=0)] | None = None
    weights_luminosity_fb: Annotated[float, Field(gt=0)] | None = None

    @field_validator("paths", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return (value,) if isinstance(value, (str, os.PathLike)) else value

    @field_validator("paths")
    @classmethod
    def _as_strings(cls, value: tuple[Any, ...]) -> tuple[str, ...]:
        return tuple(os.fspath(v) for v in value)

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str | None) -> str | None:
        if value is not None and value not in PRESETS:
            raise ValueError(f"unknown preset '{value}'; allowed: {', '.join(PRESETS)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Sample:
        parquet = all(map(is_parquet, self.paths))
        if not parquet and (self.preset is None) == (self.branch_map is None):
            raise ValueError(
                f"give exactly one of preset (allowed: {', '.join(PRESETS)}) or branch_map"
            )
        if self.kind == "data" and (
            self.xsec_pb is not None
            or self.sum_of_weights is not None
            or self.n_generated is not None
            or self.weights_luminosity_fb is not None
        ):
            raise ValueError(
                "recorded data is not normalised: xsec_pb, sum_of_weights, n_generated and "
                "weights_luminosity_fb are allowed only for kind='mc'"
            )
        if self.sum_of_weights is not None and self.n_generated is not None:
            raise ValueError("give at most one of sum_of_weights and n_generated")
        if self.xsec_pb is None and (
            self.sum_of_weights is not None or self.n_generated is not None
        ):
            raise ValueError("sum_of_weights / n_generated need xsec_pb")
        if self.xsec_pb is not None and self.weights_luminosity_fb is not None:
            raise ValueError("give xsec_pb or weights_luminosity_fb, not both")
        if self.sum_of_weights is not None and (
            self.sum_of_weights == 0 or not np.isfinite(self.sum_of_weights)
        ):
            raise ValueError("sum_of_weights must be finite and non-zero")
        return self

    def resolved_branch_map(self) -> BranchMap | None:
        """The branch map for ROOT files (``None`` for a Parquet-only sample)."""
        if self.preset is None and self.branch_map is None:
            return None
        return resolve_branch_map(preset=self.preset, branch_map=self.branch_map)

    def files(self) -> list[str]:
        """The sample's files, glob patterns expanded (sorted), in the order given.

        Raises:
            InputFileError: a pattern matches nothing.
        """
        found: list[str] = []
        for pattern in self.paths:
            if glob.has_magic(pattern):
                matches = sorted(glob.glob(pattern))
                if not matches:
                    raise InputFileError(
                        pattern, "<paths>", f"sample '{self.name}': no file matches"
                    )
                found += matches
            else:
                found.append(pattern)
        return found

    def needs_sum_of_weights(self) -> bool:
        """True when Σw must be measured from the files (MC with σ but no Σw or N given)."""
        return (
            self.kind == "mc"
            and self.xsec_pb is not None
            and self.sum_of_weights is None
            and self.n_generated is None
        )

    def scale(self, *, luminosity_fb: float, measured_sum_of_weights: float | None = None) -> float:
        """The factor that turns raw weights into events at ``luminosity_fb``."""
        if self.kind == "data":
            return 1.0
        if self.xsec_pb is None:
            if self.weights_luminosity_fb is None:
                return 1.0
            return luminosity_fb / self.weights_luminosity_fb
        total = self.sum_of_weights
        if total is None and self.n_generated is not None:
            total = float(self.n_generated)
        if total is None:
            total = measured_sum_of_weights
        if total is None or total == 0 or not np.isfinite(total):
            raise ValueError(
                f"sample '{self.name}': cannot normalise without a non-zero sum of weights "
                f"(got {total})"
            )
        return self.xsec_pb * _PB_TO_FB * luminosity_fb / total
