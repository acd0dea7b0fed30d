"""Reading and writing crystal datasets: extended XYZ (default) and HDF5.

Writes are atomic: data go to a temporary file beside the target, renamed over it only once
complete, so a failure never leaves a half-written file; an existing file is only replaced with
``force=True``.

HDF5 layout (readable by nequip's ``HDF5Dataset``, see :func:`dataset_from_file`): one group per
atom count ``natoms_<NNNNN>``, each with arrays over its ``n`` frames: ``pos`` (n, N, 3),
``atomic_numbers`` (n, N), ``cell`` (n, 3, 3), ``pbc`` (n, 3), ``dielectric_tensor``
(n, 1, 3, 3), and where every frame has them ``dielectric_ionic_tensor`` (n, 1, 3, 3) and
``born_effective_charges`` (n, N, 3, 3); ``frame`` (n,) keeps the original order, and scalar
``atoms.info`` entries (ids, crystal system, ...) are stored as ``info_<key>`` arrays.
"""

import gzip
import os
from collections import defaultdict
from typing import Callable, List, Optional

import ase
import ase.io
import numpy as np
import torch
from ase.calculators.singlepoint import SinglePointCalculator

from .._keys import DIELECTRIC_IONIC_KEY
from ..errors import InputError, not_a_file
from ..io import atomic_file
from .matching import StructureIndex
from .validation import (
    TENSOR_FIELDS,
    crystal_name,
    mapped_species,
    reference_problem,
    structure_problem,
)

LISTED_FRAMES = 20  # unusable frames listed in a dataset error

HDF5_SUFFIXES = (".h5", ".hdf5")
_EPS, _BORN = "dielectric_tensor", "born_effective_charges"
HDF5_KEY_MAPPING = {
    "pos": "pos",
    "atomic_numbers": "atomic_numbers",
    "cell": "cell",
    "pbc": "pbc",
    _EPS: _EPS,
    DIELECTRIC_IONIC_KEY: DIELECTRIC_IONIC_KEY,
    _BORN: _BORN,
}


def is_hdf5(path) -> bool:
    return str(path).lower().endswith(HDF5_SUFFIXES)


def write_frames(frames: List[ase.Atoms], path, force: bool = False) -> None:
    """Write ``frames`` to ``path`` (``.h5``/``.hdf5``: HDF5; otherwise extxyz, ``.gz`` allowed)."""
    with atomic_file(path, force=force) as tmp:
        if is_hdf5(path):
            _write_hdf5(frames, tmp)
        else:
            ase.io.write(tmp, frames, format="extxyz")


def read_frames(path) -> List[ase.Atoms]:
    """Frames of an extxyz (or any ASE-readable) file or of an HDF5 file written here;
    :class:`~aniso_nequip.errors.InputError` naming the file (and, for a damaged extxyz file,
    the frame: :func:`structure_file_problem`) when it cannot be read."""
    problem = None if is_hdf5(path) else structure_file_problem(path)
    if problem:
        raise InputError(f"cannot read `{path}`: {problem}")
    try:
        return _read_hdf5(path) if is_hdf5(path) else ase.io.read(path, ":")
    except Exception as err:  # ASE/h5py raise many types for malformed files
        raise InputError(f"cannot read `{path}`: {type(err).__name__}: {err}") from err


_KINDS = {".extxyz": "extxyz", ".xyz": "extxyz", ".cif": "CIF", ".vasp": "POSCAR"}
_SUFFIX = {"extxyz": ".extxyz", "CIF": ".cif", "POSCAR": ".vasp"}


def _kind_by_name(path: str) -> Optional[str]:
    name = os.path.basename(path)
    if name.startswith(("POSCAR", "CONTCAR")):
        return "POSCAR"
    stem = name[:-3] if name.lower().endswith(".gz") else name
    return _KINDS.get(os.path.splitext(stem)[1].lower())


def _kind_by_content(lines: List[str]) -> Optional[str]:
    head = [line.strip() for line in lines[:50] if line.strip()]
    if not head:
        return None
    if head[0].isdigit() and len(head) > 1 and ("Lattice=" in head[1] or "Properties=" in head[1]):
        return "extxyz"
    if head[0].startswith("data_") or any(line.startswith("_cell_length_a") for line in head):
        return "CIF"
    return None


def structure_file_problem(path) -> Optional[str]:
    """What makes a structure file unreadable as its name says, found before ASE reads it
    (whose errors name neither the frame nor the cause), or ``None``: a folder; content of
    another format than the name says (an extxyz file named ``.cif``); an extxyz file with a
    frame cut short, a missing, extra or cut row (naming the frame and line) or a last line cut
    without its end of line; a POSCAR whose atom counts disagree with its species or its
    coordinate rows."""
    if os.path.isdir(path):
        return "it is a folder, not a file"
    kind = _kind_by_name(os.fspath(path))
    opener = gzip.open if os.fspath(path).lower().endswith(".gz") else open
    try:
        with opener(path, "rt", errors="replace") as f:
            text = f.read()
    except (OSError, EOFError) as err:
        return f"{type(err).__name__}: {err} (a truncated or damaged file?)"
    lines = text.splitlines()
    found = _kind_by_content(lines)
    if kind and found and kind != found:
        return f"its name says {kind} but it holds {found}: rename it `{_SUFFIX[found]}`"
    if kind == "extxyz" and found == "extxyz":
        return _extxyz_problem(lines, text.endswith("\n"))
    if kind == "POSCAR":
        return _poscar_problem(lines)
    return None


def _extxyz_problem(lines: List[str], newline_at_end: bool) -> Optional[str]:
    import re

    i, frame = 0, 0
    while i < len(lines) and lines[i].strip():
        count = lines[i].split()[0]
        if not count.isdigit():
            return (
                f"line {i + 1} should start frame {frame} with its atom count but reads "
                f"{lines[i][:40]!r} (a missing or extra atom row in frame {frame - 1}?)"
            )
        n_atoms, header = int(count), lines[i + 1] if i + 1 < len(lines) else ""
        rows = lines[i + 2 : i + 2 + n_atoms]
        if len(rows) < n_atoms:
            return (
                f"frame {frame} (line {i + 1}) is cut short: {n_atoms} atoms announced, "
                f"{len(rows)} row(s) present (the file is truncated)"
            )
        properties = re.search(r"Properties=(\S+)", header)
        fields = properties.group(1).split(":") if properties else []
        width = sum(int(n) for n in fields[2::3] if n.isdigit())
        for k, row in enumerate(rows):
            if row.strip().isdigit():
                return (
                    f"frame {frame} (line {i + 1}) has {k} atom row(s) where {n_atoms} are "
                    f"announced (line {i + 3 + k} starts the next frame): a missing row"
                )
            if width and len(row.split()) != width:
                return (
                    f"frame {frame}, atom {k} (line {i + 3 + k}) has {len(row.split())} values "
                    f"instead of {width} (a cut or damaged row)"
                )
        i, frame = i + 2 + n_atoms, frame + 1
    if not newline_at_end:
        return f"its last line (frame {frame - 1}) ends without an end of line: the file is cut"
    return None


def _poscar_problem(lines: List[str]) -> Optional[str]:
    if len(lines) < 8:
        return f"a POSCAR needs at least 8 lines, this one has {len(lines)}"
    first = lines[5].split()
    species = [] if all(t.isdigit() for t in first) else first
    counts_line = 6 if species else 5
    counts = lines[counts_line].split()
    if not counts or not all(t.isdigit() for t in counts):
        return f"line {counts_line + 1} should hold the atom counts, got {lines[counts_line]!r}"
    if species and len(species) != len(counts):
        return (
            f"{len(species)} species ({' '.join(species)}, line 6) but {len(counts)} atom "
            f"count(s) ({' '.join(counts)}, line 7)"
        )
    start = counts_line + 1
    if lines[start].strip()[:1] in ("S", "s"):  # Selective dynamics
        start += 1
    rows = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        rows.append(line)
    n_atoms = sum(int(c) for c in counts)
    if len(rows) != n_atoms:
        return (
            f"the atom counts (line {counts_line + 1}: {' '.join(counts)}) sum to {n_atoms} but "
            f"{len(rows)} coordinate row(s) follow"
        )
    return None


def _scalar_info_keys(frames: List[ase.Atoms]) -> List[str]:
    keys = set.intersection(*(set(a.info) for a in frames)) if frames else set()
    return sorted(
        k
        for k in keys
        if all(isinstance(a.info[k], (str, int, float, np.integer, np.floating)) for a in frames)
    )


def _write_hdf5(frames: List[ase.Atoms], path) -> None:
    import h5py

    groups = defaultdict(list)
    for i, atoms in enumerate(frames):
        groups[len(atoms)].append(i)
    info_keys = _scalar_info_keys(frames)
    with h5py.File(path, "w") as f:
        for n_atoms, indices in sorted(groups.items()):
            sub = [frames[i] for i in indices]
            g = f.create_group(f"natoms_{n_atoms:05d}")  # sorted by name = by atom count
            g["frame"] = np.asarray(indices)
            g["pos"] = np.stack([a.positions for a in sub])
            g["atomic_numbers"] = np.stack([a.numbers for a in sub])
            g["cell"] = np.stack([a.cell.array for a in sub])
            g["pbc"] = np.stack([a.pbc for a in sub])
            results = [a.calc.results if a.calc is not None else {} for a in sub]
            if all(_EPS in r for r in results):
                g[_EPS] = np.stack([np.reshape(r[_EPS], (1, 3, 3)) for r in results])
            if all(_BORN in r for r in results):
                g[_BORN] = np.stack([np.reshape(r[_BORN], (n_atoms, 3, 3)) for r in results])
            if all(DIELECTRIC_IONIC_KEY in a.info for a in sub):
                g[DIELECTRIC_IONIC_KEY] = np.stack(
                    [np.reshape(a.info[DIELECTRIC_IONIC_KEY], (1, 3, 3)) for a in sub]
                )
            for key in info_keys:
                values = [a.info[key] for a in sub]
                g[f"info_{key}"] = (
                    np.asarray(values, dtype=h5py.string_dtype())
                    if isinstance(values[0], str)
                    else np.asarray(values)
                )


def _read_hdf5(path) -> List[ase.Atoms]:
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        for g in f.values():
            arrays = {k: g[k][()] for k in g}
            for j, index in enumerate(arrays["frame"]):
                atoms = ase.Atoms(
                    numbers=arrays["atomic_numbers"][j],
                    positions=arrays["pos"][j],
                    cell=arrays["cell"][j],
                    pbc=arrays["pbc"][j],
                )
                results = {}
                if _EPS in arrays:
                    results[_EPS] = arrays[_EPS][j].reshape(9)
                if _BORN in arrays:
                    results[_BORN] = arrays[_BORN][j].reshape(len(atoms), 9)
                if DIELECTRIC_IONIC_KEY in arrays:
                    atoms.info[DIELECTRIC_IONIC_KEY] = arrays[DIELECTRIC_IONIC_KEY][j].reshape(9)
                for key, values in arrays.items():
                    if key.startswith("info_"):
                        value = values[j]
                        atoms.info[key[5:]] = value.decode() if isinstance(value, bytes) else value
                if results:
                    atoms.calc = SinglePointCalculator(atoms, **results)
                out[int(index)] = atoms
    return [out[i] for i in sorted(out)]


def dataset_from_file(
    file_path: str,
    transforms: Optional[List[Callable]] = None,
    include_keys: Optional[List[str]] = None,
    exclude_keys: Optional[List[str]] = None,
    exclude_structures_in: Optional[List[str]] = None,
):
    """A nequip dataset for ``file_path``: ``HDF5Dataset`` for ``.h5``/``.hdf5`` files written by
    :func:`write_frames`, else ``ASEDataset`` (extxyz, ``.gz`` allowed). Used as the ``_target_``
    of the datasets in ``configs/anisonet.yaml``, so ``train_file=...`` may name either format.

    ``include_keys`` adds ``atoms.info`` fields to load (e.g. ``dielectric_ionic_tensor``);
    ``exclude_keys`` drops fields the model does not use (e.g. ``born_effective_charges``).
    ``exclude_structures_in`` names dataset files whose crystals must not be used: frames of
    ``file_path`` matching one of them (by id, else by structure; see
    :class:`~aniso_nequip.data.matching.StructureIndex`) are left out, e.g. to pre-train on
    another collection without seeing the validation and test crystals.

    Every frame is checked first (:mod:`~aniso_nequip.data.validation`: the structure, elements
    the type mapper of ``transforms`` does not map, and the loaded reference tensors); unusable
    frames raise :class:`~aniso_nequip.errors.InputError` naming the file, each frame's index
    and its problem, before any training. The dataset's ``frame_elements`` lists each frame's
    elements in the order the dataset reads them (see :func:`dataset_elements`)."""
    from nequip.data.dataset import ASEDataset, HDF5Dataset

    transforms = list(transforms or [])
    include_keys = list(include_keys or [])
    exclude_keys = list(exclude_keys or [])
    for path in [file_path, *(exclude_structures_in or [])]:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"dataset file `{path}` {not_a_file(path)}")
    # the ionic tensor is loaded only when asked for
    fields = [
        f
        for f in TENSOR_FIELDS
        if f not in exclude_keys and (f != DIELECTRIC_IONIC_KEY or f in include_keys)
    ]
    frames = _checked_frames(file_path, mapped_species(transforms), fields)
    if is_hdf5(file_path):
        optional = {DIELECTRIC_IONIC_KEY} - set(include_keys)
        mapping = {
            k: v for k, v in HDF5_KEY_MAPPING.items() if v not in exclude_keys and v not in optional
        }
        dataset = HDF5Dataset(file_name=file_path, transforms=transforms, key_mapping=mapping)
        frames = sorted(frames, key=len)  # HDF5Dataset reads frames grouped by atom count
    else:
        dataset = ASEDataset(
            file_path=file_path,
            transforms=transforms,
            include_keys=include_keys,
            exclude_keys=exclude_keys,
        )
    if exclude_structures_in:
        index = StructureIndex(a for path in exclude_structures_in for a in read_frames(path))
        kept = [i for i, atoms in enumerate(frames) if atoms not in index]
        dataset, frames = torch.utils.data.Subset(dataset, kept), [frames[i] for i in kept]
    dataset.frame_elements = [sorted(set(atoms.get_chemical_symbols())) for atoms in frames]
    return dataset


def _checked_frames(file_path, type_names: Optional[List[str]], fields: List[str]):
    """The frames of ``file_path``; :class:`~aniso_nequip.errors.InputError` listing the unusable
    ones (structure or reference tensors among ``fields``). The check shows a progress bar: it
    builds every frame's neighbour list (minutes for the bundled MP training split on a laptop)."""
    from tqdm import tqdm

    frames = read_frames(file_path)
    bad = []
    name = os.path.basename(os.fspath(file_path))
    for i, atoms in enumerate(tqdm(frames, desc=f"checking {name}", unit="frame")):
        problem = structure_problem(atoms, type_names, bulk=False)
        problem = problem or reference_problem(atoms, fields)
        if problem:
            bad.append(f"  frame {i} ({crystal_name(atoms)}): {problem}")
    if bad:
        raise InputError(
            f"dataset file `{file_path}`: {len(bad)} of {len(frames)} frame(s) cannot be used "
            f"for training; fix or remove them:\n{listed_frames(bad)}"
        )
    return frames


def listed_frames(lines: List[str]) -> str:
    """The first :data:`LISTED_FRAMES` of ``lines`` (one per unusable frame), one a line, and
    how many more there are."""
    more = len(lines) - LISTED_FRAMES
    return "\n".join(lines[:LISTED_FRAMES]) + (f"\n  ... and {more} more" if more > 0 else "")


def dataset_elements(dataset) -> Optional[List[str]]:
    """The elements of a dataset made by :func:`dataset_from_file` (or a ``Subset``,
    ``ConcatDataset`` or list of them, as nequip's data modules hold them); ``None`` for another
    kind of dataset."""
    if isinstance(dataset, torch.utils.data.ConcatDataset) or not isinstance(
        dataset, torch.utils.data.Dataset
    ):
        parts = [dataset_elements(d) for d in getattr(dataset, "datasets", dataset)]
        return None if None in parts else sorted(set().union(*parts))
    if hasattr(dataset, "frame_elements"):
        return sorted(set().union(*dataset.frame_elements))
    if isinstance(dataset, torch.utils.data.Subset):
        inner = getattr(dataset.dataset, "frame_elements", None)
        if inner is None:
            return None
        return sorted(set().union(*(inner[i] for i in dataset.indices)))
    return None
