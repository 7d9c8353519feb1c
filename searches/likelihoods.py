"""Import published HEPData-style pyhf likelihoods: a background-only workspace plus signal patches.

Experiments publish one background-only workspace per analysis region and one JSON patch per
signal hypothesis, either as a ``patchset.json`` (pyhf's PatchSet format, which carries the digest
of the background it was made for) or as loose ``patch.<name>.json`` files, usually inside a
tarball. Everything is read in place (a tarball is never extracted) and checked up front, so a
patch for another background model or a truncated file fails with one error naming the file,
instead of surfacing later as a nonsense fit.
"""

from __future__ import annotations

import copy
import json
import re
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import jsonpatch
import jsonpointer
import pyhf

BACKGROUND_FILE = "BkgOnly.json"
PATCHSET_FILE = "patchset.json"
PATCH_PATTERN = re.compile(r"^patch\.(?P<name>.+)\.json$")
KNOWN_LABELS: dict[str, tuple[str, ...]] = {"sbottom": ("m_sbottom", "m_chi2", "m_chi1")}
"""Parameter names for patch-name prefixes whose meaning the publication documents."""


class LikelihoodImportError(ValueError):
    """A published likelihood that cannot be used as given; the message names the file."""


@dataclass(frozen=True)
class SignalPatch:
    """One signal hypothesis: JSON-patch operations (RFC 6902) on the background-only workspace.

    Attributes:
        name: Hypothesis name, e.g. ``sbottom_1300_205_60``.
        parameters: Model parameters of the hypothesis (from the patchset labels or the name).
        operations: The JSON-patch operations, in order.
        source: File (or ``tarball:member``) the patch came from, for error messages.
    """

    name: str
    parameters: Mapping[str, float]
    operations: tuple[Mapping[str, Any], ...]
    source: str

    def to_json(self) -> list[dict[str, Any]]:
        """The operations as a plain JSON-patch list."""
        return [dict(op) for op in self.operations]


@dataclass(frozen=True, eq=False)
class PublishedLikelihood:
    """A background-only workspace and the signal patches published for it.

    Attributes:
        name: Region name (folder of ``BkgOnly.json``; ``""`` when it sits at the top).
        background: The background-only pyhf workspace specification (validated).
        patches: Signal hypotheses, sorted by name.
        source: Where the background workspace was read from.
        digest: sha256 digest of ``background`` as pyhf computes it (what patchsets reference).
    """

    name: str
    background: Mapping[str, Any]
    patches: tuple[SignalPatch, ...]
    source: str
    digest: str = field(default="")

    def patch(self, name: str) -> SignalPatch:
        """The patch called ``name``; the error lists a few available names."""
        for item in self.patches:
            if item.name == name:
                return item
        some = ", ".join(p.name for p in self.patches[:5])
        raise KeyError(f"{self.source}: no patch named {name!r} (have e.g. {some})")

    def workspace(self, patch: SignalPatch | str) -> dict[str, Any]:
        """The signal+background workspace specification for one patch (checked)."""
        item = self.patch(patch) if isinstance(patch, str) else patch
        return apply_patch(self.background, item)


def _parse_json(text: bytes | str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise LikelihoodImportError(
            f"{source}: malformed JSON at line {error.lineno}, column {error.colno}: {error.msg}"
        ) from None
    except UnicodeDecodeError as error:
        raise LikelihoodImportError(f"{source}: not UTF-8 text ({error.reason})") from None


def check_workspace(spec: Any, *, source: str, poi_required: bool = False) -> None:
    """Validate a workspace spec against pyhf's schema and for channel/sample consistency.

    pyhf validates the JSON schema but only notices a channel without observations, or a
    sample whose bin count differs from its channel's data, when a model is built deep inside a
    fit; here each becomes one error naming the channel or sample.

    Args:
        spec: Workspace specification (``channels``, ``observations``, ``measurements``).
        source: File name used in error messages.
        poi_required: Also require that some sample carries the measurement's POI as a
            normfactor (true for a signal+background workspace).

    Raises:
        LikelihoodImportError: On the first problem found.
    """
    if not isinstance(spec, Mapping):
        raise LikelihoodImportError(
            f"{source}: a workspace must be a JSON object, got {type(spec).__name__}"
        )
    try:
        pyhf.schema.validate(spec, "workspace.json")
    except pyhf.exceptions.InvalidSpecification as error:
        path = "/".join(str(p) for p in getattr(error, "path", ()) or ())
        raise LikelihoodImportError(
            f"{source}: not a valid pyhf workspace ({getattr(error, 'message', error)}"
            + (f" at /{path}" if path else "")
            + ")"
        ) from None
    observed = {obs["name"]: len(obs["data"]) for obs in spec["observations"]}
    for channel in spec["channels"]:
        name = channel["name"]
        if name not in observed:
            raise LikelihoodImportError(
                f"{source}: channel {name!r} has no observations (observed channels: "
                f"{sorted(observed)})"
            )
        for sample in channel["samples"]:
            if len(sample["data"]) != observed[name]:
                raise LikelihoodImportError(
                    f"{source}: sample {sample['name']!r} of channel {name!r} has "
                    f"{len(sample['data'])} bins, the channel's observations have {observed[name]}"
                )
    if not poi_required:
        return
    pois = {m["config"]["poi"] for m in spec["measurements"]}
    carried = {
        mod["name"]
        for channel in spec["channels"]
        for sample in channel["samples"]
        for mod in sample["modifiers"]
        if mod["type"] == "normfactor"
    }
    missing = sorted(pois - carried)
    if missing:
        raise LikelihoodImportError(
            f"{source}: missing signal sample: no sample carries the POI normfactor "
            f"{missing[0]!r} (channels: {[c['name'] for c in spec['channels']]})"
        )


def apply_patch(background: Mapping[str, Any], patch: SignalPatch) -> dict[str, Any]:
    """Apply one signal patch to a background-only spec and validate the result.

    Raises:
        LikelihoodImportError: When an operation points at a channel/sample the background lacks
            (the usual sign of a patch made for another background model), or the result is not
            a usable signal+background workspace.
    """
    try:
        spec = jsonpatch.apply_patch(copy.deepcopy(dict(background)), patch.to_json())
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as error:
        raise LikelihoodImportError(
            f"{patch.source}: patch {patch.name!r} does not apply to the background-only "
            f"workspace ({error}); missing channel or sample — is it a patch for another "
            "background model?"
        ) from None
    except (TypeError, KeyError) as error:
        raise LikelihoodImportError(
            f"{patch.source}: patch {patch.name!r} is not a list of JSON-patch operations ({error})"
        ) from None
    check_workspace(spec, source=f"{patch.source} applied to the background", poi_required=True)
    return spec


def _parameters(name: str, labels: Sequence[str] | None) -> dict[str, float]:
    tokens = name.split("_")
    values: list[float] = []
    for token in tokens[1:]:
        try:
            values.append(float(token))
        except ValueError:
            return {}
    names = labels or KNOWN_LABELS.get(tokens[0]) or tuple(f"x{i}" for i in range(len(values)))
    if len(names) != len(values):
        names = tuple(f"x{i}" for i in range(len(values)))
    return dict(zip(names, values, strict=True))


def _check_operations(ops: Any, source: str) -> tuple[Mapping[str, Any], ...]:
    if not isinstance(ops, list) or not all(isinstance(op, Mapping) for op in ops):
        raise LikelihoodImportError(f"{source}: a patch must be a JSON list of operations")
    for index, op in enumerate(ops):
        if op.get("op") not in {
            "add",
            "remove",
            "replace",
            "move",
            "copy",
            "test",
        } or not isinstance(op.get("path"), str):
            raise LikelihoodImportError(
                f"{source}: operation {index} is not a JSON-patch operation "
                "(needs 'op' in add/remove/replace/move/copy/test and a string 'path')"
            )
    return tuple(ops)


def patches_from_patchset(
    background: Mapping[str, Any], patchset: Any, *, source: str
) -> tuple[SignalPatch, ...]:
    """Signal patches of a pyhf PatchSet, after checking it was made for ``background``.

    Raises:
        LikelihoodImportError: Invalid patchset, or digest mismatch (a patch for another
            background model).
    """
    try:
        parsed = pyhf.PatchSet(patchset)
    except pyhf.exceptions.InvalidSpecification as error:
        raise LikelihoodImportError(
            f"{source}: not a valid pyhf patchset ({getattr(error, 'message', error)})"
        ) from None
    try:
        parsed.verify(background)
    except pyhf.exceptions.PatchSetVerificationError as error:
        raise LikelihoodImportError(
            f"{source}: digest mismatch, the patchset was made for another background-only "
            f"workspace ({error})"
        ) from None
    out = []
    for item in parsed.patches:
        parameters = dict(zip(parsed.labels, (float(v) for v in item.values), strict=True))
        out.append(
            SignalPatch(
                name=item.name,
                parameters=parameters,
                operations=_check_operations(item.patch, f"{source}:{item.name}"),
                source=f"{source}:{item.name}",
            )
        )
    return tuple(sorted(out, key=lambda p: p.name))


def _region(
    name: str,
    background_text: bytes,
    background_source: str,
    patchset: tuple[bytes, str] | None,
    patch_files: Iterable[tuple[str, bytes, str]],
    labels: Sequence[str] | None,
) -> PublishedLikelihood:
    background = _parse_json(background_text, background_source)
    check_workspace(background, source=background_source)
    if patchset is not None:
        text, source = patchset
        patches = patches_from_patchset(background, _parse_json(text, source), source=source)
    else:
        patches = tuple(
            sorted(
                (
                    SignalPatch(
                        name=patch_name,
                        parameters=_parameters(patch_name, labels),
                        operations=_check_operations(_parse_json(text, src), src),
                        source=src,
                    )
                    for patch_name, text, src in patch_files
                ),
                key=lambda p: p.name,
            )
        )
    if not patches:
        raise LikelihoodImportError(
            f"{background_source}: no {PATCHSET_FILE} and no patch.<name>.json files beside it"
        )
    return PublishedLikelihood(
        name=name,
        background=background,
        patches=patches,
        source=background_source,
        digest=pyhf.utils.digest(background),
    )


def _group_members(names: Iterable[str]) -> dict[str, dict[str, str]]:
    """Folder → {file name: member} for every folder that holds a BkgOnly.json."""
    folders: dict[str, dict[str, str]] = {}
    for member in names:
        path = PurePosixPath(member)
        folders.setdefault(str(path.parent), {})[path.name] = member
    return {k: v for k, v in folders.items() if BACKGROUND_FILE in v}


def _load_tarball(path: Path, labels: Sequence[str] | None) -> tuple[PublishedLikelihood, ...]:
    try:
        archive = tarfile.open(path, "r:*")  # noqa: SIM115 (closed by the with block below)
    except (tarfile.TarError, OSError) as error:
        raise LikelihoodImportError(f"{path}: not a readable tar archive ({error})") from None
    with archive:
        members = {m.name: m for m in archive.getmembers() if m.isfile()}

        def read(member: str) -> bytes:
            handle = archive.extractfile(members[member])
            assert handle is not None
            return handle.read()

        regions = []
        for folder, files in sorted(_group_members(members).items()):
            patchset = None
            if PATCHSET_FILE in files:
                patchset = (read(files[PATCHSET_FILE]), f"{path}:{files[PATCHSET_FILE]}")
            patch_files = [
                (match["name"], read(member), f"{path}:{member}")
                for file_name, member in sorted(files.items())
                if (match := PATCH_PATTERN.match(file_name))
            ]
            regions.append(
                _region(
                    "" if folder == "." else PurePosixPath(folder).name,
                    read(files[BACKGROUND_FILE]),
                    f"{path}:{files[BACKGROUND_FILE]}",
                    patchset,
                    patch_files,
                    labels,
                )
            )
    if not regions:
        raise LikelihoodImportError(f"{path}: the archive holds no {BACKGROUND_FILE}")
    return tuple(regions)


def _load_directory(
    path: Path, labels: Sequence[str] | None, *, recursive: bool = True
) -> tuple[PublishedLikelihood, ...]:
    backgrounds = sorted(path.rglob(BACKGROUND_FILE)) if recursive else [path / BACKGROUND_FILE]
    if not backgrounds:
        raise LikelihoodImportError(f"{path}: no {BACKGROUND_FILE} in this folder or below")
    regions = []
    for background in backgrounds:
        folder = background.parent
        patchset_path = folder / PATCHSET_FILE
        patchset = (
            (patchset_path.read_bytes(), str(patchset_path)) if patchset_path.is_file() else None
        )
        patch_files = [
            (match["name"], file.read_bytes(), str(file))
            for file in sorted(folder.iterdir())
            if (match := PATCH_PATTERN.match(file.name))
        ]
        regions.append(
            _region(
                "" if folder == path else folder.name,
                background.read_bytes(),
                str(background),
                patchset,
                patch_files,
                labels,
            )
        )
    return tuple(regions)


def load_likelihoods(
    path: str | Path, *, labels: Sequence[str] | None = None
) -> tuple[PublishedLikelihood, ...]:
    """Read every region of a published likelihood.

    Args:
        path: A tarball (read in place), a folder holding one or more ``BkgOnly.json`` (each with
            a ``patchset.json`` or ``patch.<name>.json`` files beside it), or a ``BkgOnly.json``.
        labels: Parameter names for the numbers in loose patch names (``patch.sbottom_1300_205_60``
            → ``{labels[0]: 1300, ...}``); defaults to the publication's names for known prefixes,
            else ``x0, x1, ...``. Ignored for patchsets, which carry their own labels.

    Returns:
        One :class:`PublishedLikelihood` per region, sorted by region name.

    Raises:
        LikelihoodImportError: Missing or unreadable files, malformed JSON, invalid workspace,
            digest mismatch.
    """
    path = Path(path)
    if not path.exists():
        raise LikelihoodImportError(f"{path}: no such file or folder")
    if path.is_dir():
        return _load_directory(path, labels)
    if path.name == BACKGROUND_FILE:
        return _load_directory(path.parent, labels, recursive=False)
    if tarfile.is_tarfile(path):
        return _load_tarball(path, labels)
    raise LikelihoodImportError(
        f"{path}: expected a tarball, a folder or a {BACKGROUND_FILE} (allowed: .tar, .tar.gz, "
        "folder with BkgOnly.json + patchset.json or patch.<name>.json files)"
    )
