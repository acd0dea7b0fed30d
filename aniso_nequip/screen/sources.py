"""Streaming the structures to screen: extxyz (or any ASE-readable) files, folders of CIF/POSCAR
files, and JSON(.gz) dumps of Materials Project summary documents.

Every structure has a global index, its position over all inputs in the order given (folders in
sorted file-name order); the index decides its shard. Only the structures of the requested shard
are converted, and files are read frame by frame, so memory does not grow with the pool (JSON
dumps are the exception: a dump is parsed whole). :func:`count_structures` counts a pool without
converting it (for the progress bar). Each
structure comes with its problem (:func:`~aniso_nequip.data.validation.structure_problem`, or
why its document cannot be converted), so the runner skips and lists it.
"""

import gzip
import itertools
import pathlib
from typing import Callable, Iterator, Optional, Sequence, Tuple

import ase
import ase.io

from ..data.mp import DocumentError, document_atoms, document_to_dict, read_documents
from ..data.validation import structure_problem
from ..errors import InputError
from ..io import full_suffix

JSON_SUFFIXES = (".json", ".json.gz")
STRUCTURE_SUFFIXES = (".cif", ".vasp", ".poscar")
POSCAR_NAMES = ("POSCAR", "CONTCAR")
EXTXYZ_SUFFIXES = (".xyz", ".extxyz", ".xyz.gz", ".extxyz.gz")
METADATA_KEYS = ("energy_above_hull", "band_gap")
Entry = Tuple[Optional[ase.Atoms], Optional[str]]  # a structure, or None and its problem


def _read(path: pathlib.Path, fmt: Optional[str] = None) -> Iterator[ase.Atoms]:
    try:
        yield from ase.io.iread(path, index=":", format=fmt)
    except Exception as err:  # ASE raises many types for malformed files
        raise InputError(f"cannot read `{path}`: {type(err).__name__}: {err}") from err


def _structure_files(folder: pathlib.Path) -> list:
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file()
        and (p.suffix.lower() in STRUCTURE_SUFFIXES or p.name.startswith(POSCAR_NAMES))
    )
    if not files:
        raise InputError(
            f"folder `{folder}` holds no structure files ({', '.join(STRUCTURE_SUFFIXES)}, "
            f"{'/'.join(POSCAR_NAMES)}*)"
        )
    return files


def _folder(folder: pathlib.Path) -> Iterator[Tuple[str, Callable[[], Entry]]]:
    for path in _structure_files(folder):
        fmt = "vasp" if path.name.startswith(POSCAR_NAMES) else None
        frames = list(_read(path, fmt))
        if not frames:
            raise InputError(f"`{path}` contains no structure")
        for i, atoms in enumerate(frames):
            atoms.info.setdefault("entry_id", path.stem if len(frames) == 1 else f"{path.stem}-{i}")
            source = str(path) if len(frames) == 1 else f"{path}:{i}"
            yield source, lambda atoms=atoms: (atoms, None)


def _document(doc, i: int) -> Entry:
    """The document's structure with its metadata, or ``None`` and why it cannot be converted."""
    try:
        doc = document_to_dict(doc)
        material_id = str(doc.get("material_id") or f"<entry {i}>")
        atoms = document_atoms(doc, material_id)
    except DocumentError as err:
        return None, f"{err.material_id}: {err.problem}"
    atoms.info["material_id"] = material_id
    if doc.get("formula_pretty"):
        atoms.info["formula"] = str(doc["formula_pretty"])
    for key in METADATA_KEYS:
        if doc.get(key) is not None:
            atoms.info[key] = float(doc[key])
    return atoms, None


def _documents(path: pathlib.Path) -> Iterator[Tuple[str, Callable[[], Entry]]]:
    for i, doc in enumerate(read_documents(str(path))):
        yield f"{path}#{i}", lambda doc=doc, i=i: _document(doc, i)


def _frames(path: pathlib.Path) -> Iterator[Tuple[str, Callable[[], Entry]]]:
    if path.stat().st_size == 0:
        raise InputError(f"`{path}` is empty")
    for i, atoms in enumerate(_read(path)):
        yield f"{path}:{i}", lambda atoms=atoms: (atoms, None)


def _extxyz_frames(path: pathlib.Path) -> Optional[int]:
    """Frames in an extxyz(.gz) file, counted from their atom-count lines without parsing them;
    ``None`` when the file does not look like one (its reader reports the problem)."""
    opener = gzip.open if path.name.endswith(".gz") else open
    frames = 0
    try:
        with opener(path, "rt") as f:
            for line in f:
                if not line.strip():
                    continue
                n_atoms = int(line)
                if sum(1 for _ in itertools.islice(f, n_atoms + 1)) < n_atoms + 1:
                    return None
                frames += 1
    except (ValueError, OSError, EOFError, UnicodeDecodeError):
        return None
    return frames


def count_structures(paths: Sequence) -> Optional[int]:
    """How many structures :func:`iter_structures` reads from ``paths`` over all shards (a
    folder counts one per structure file); ``None`` when a file cannot be counted without being
    read (formats other than extxyz and JSON, or a malformed file)."""
    total = 0
    for path in map(pathlib.Path, paths):
        if path.is_dir():
            count = len(_structure_files(path))
        elif full_suffix(path).lower() in JSON_SUFFIXES:
            count = len(read_documents(str(path)))
        elif path.is_file() and full_suffix(path).lower() in EXTXYZ_SUFFIXES:
            count = _extxyz_frames(path)
        else:
            count = None
        if count is None:
            return None
        total += count
    return total


def shard_size(total: Optional[int], shard: int, n_shards: int) -> Optional[int]:
    """How many of ``total`` structures belong to shard ``shard`` of ``n_shards``."""
    return None if total is None else max(0, (total - shard + n_shards - 1) // n_shards)


def iter_structures(
    paths: Sequence,
    shard: int = 0,
    n_shards: int = 1,
    type_names: Optional[Sequence[str]] = None,
    start: int = 0,
) -> Iterator[Tuple[int, str, Optional[ase.Atoms], Optional[str]]]:
    """Yield ``(index, source, atoms, problem)`` for the structures of shard ``shard`` of
    ``n_shards`` (those with ``index % n_shards == shard``) from index ``start`` on (those
    before it are not converted: a resumed run).

    ``source`` names where a structure came from: ``file:frame``, a CIF/POSCAR file, or
    ``file#entry`` for a document dump. Document metadata (``material_id``, ``formula``,
    ``energy_above_hull``, ``band_gap``) land in ``atoms.info``; files in a folder get their
    name as ``entry_id``. ``problem`` is ``None`` for a usable structure, else why it is not:
    :func:`~aniso_nequip.data.validation.structure_problem` with ``type_names`` (the elements
    the models know), or, with ``atoms`` ``None``, why a document cannot be converted. Raises
    :class:`~aniso_nequip.errors.InputError` for a missing, empty or unreadable input.
    """
    index = 0
    for path in map(pathlib.Path, paths):
        if path.is_dir():
            entries = _folder(path)
        elif not path.exists():
            raise InputError(f"input `{path}` does not exist")
        elif full_suffix(path).lower() in JSON_SUFFIXES:
            entries = _documents(path)
        else:
            entries = _frames(path)
        for source, load in entries:
            if index % n_shards == shard and index >= start:
                atoms, problem = load()
                if problem is None:
                    problem = structure_problem(atoms, type_names)
                yield index, source, atoms, problem
            index += 1
