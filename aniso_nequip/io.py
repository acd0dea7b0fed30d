"""Safe output: results appear complete or not at all, and nothing existing is overwritten
unless asked."""

import contextlib
import gzip
import json
import os
import pathlib
import shutil
import tempfile
from typing import Any, Iterator, Union

from .errors import InputError


def full_suffix(path: pathlib.Path) -> str:
    """``".extxyz.gz"`` for ``a.extxyz.gz``, ``".h5"`` for ``a.h5``."""
    return "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix


class OutputExistsError(FileExistsError, InputError):
    """The output already exists and overwriting was not requested."""


def check_output_dir(out: Union[str, os.PathLike], force: bool = False) -> None:
    """Refuse an ``out`` that is not a directory, or a non-empty one unless ``force``: the check
    :func:`staged_output_dir` makes, for commands that want it before their expensive work."""
    out = pathlib.Path(out)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"output `{out}` exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise OutputExistsError(
            f"output directory `{out}` is not empty; choose another or pass --force to overwrite"
        )


@contextlib.contextmanager
def staged_output_dir(out: Union[str, os.PathLike], force: bool = False) -> Iterator[pathlib.Path]:
    """Yield a fresh staging folder beside ``out``; on success move its files into ``out``.

    Files are written into the staging folder and only moved (``os.replace``, atomic per file)
    into ``out`` once the block finishes without error; on error the staging folder is removed and
    ``out`` is left as it was. An ``out`` that exists and is not empty is refused unless ``force``.
    """
    out = pathlib.Path(out)
    check_output_dir(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield stage
        out.mkdir(exist_ok=True)
        for item in stage.iterdir():
            os.replace(item, out / item.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path: Union[str, os.PathLike], force: bool = False) -> Iterator[pathlib.Path]:
    """Yield a temporary path beside ``path`` (same suffixes); rename it to ``path`` on success.

    A failure inside the block removes the temporary file and leaves ``path`` untouched; an
    existing ``path`` is refused unless ``force``. The file gets the usual permissions (umask).
    """
    path = pathlib.Path(path)
    if path.exists() and not force:
        raise OutputExistsError(f"`{path}` exists; pass --force to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.partial-", suffix=full_suffix(path), dir=path.parent
    )
    os.close(fd)
    try:
        yield pathlib.Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(obj: Any, path: Union[str, os.PathLike], force: bool = False) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (:func:`atomic_file`); a ``.gz`` path is
    gzip-compressed and written without indentation."""
    compress = str(path).endswith(".gz")
    with atomic_file(path, force=force) as tmp:
        with gzip.open(tmp, "wt") if compress else open(tmp, "w") as f:
            json.dump(obj, f, indent=None if compress else 2)
