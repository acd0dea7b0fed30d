"""Safe output: results appear complete or not at all, nothing existing is overwritten unless
asked, and one output has one writer at a time.

:func:`output_set` is how a command writes the files that belong together (a dataset's splits
and report; predictions, metrics and plots): it checks and claims the output before the
command's expensive work, stages every file in a hidden folder beside it and swaps the whole set
in at the end::

    with output_set("eval/mp_test", ["metrics.json", "metrics.md"], whole_folder=True) as stage:
        metrics = expensive_work()
        write_json(metrics, stage / "metrics.json")
        (stage / "metrics.md").write_text(table(metrics))
"""

import contextlib
import gzip
import json
import os
import pathlib
import shutil
import signal
import tempfile
import threading
from typing import Any, Iterator, Optional, Sequence, Tuple, Union

import filelock

from .errors import InputError

_MANIFEST = ".set.json"  # in a backup folder: the members of the set and those that existed


def full_suffix(path: pathlib.Path) -> str:
    """``".extxyz.gz"`` for ``a.extxyz.gz``, ``".h5"`` for ``a.h5``."""
    return "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix


class OutputExistsError(FileExistsError, InputError):
    """The output already exists and overwriting was not requested."""


class OutputInUseError(InputError):
    """Another process is writing the output."""


class OutputWriteError(OSError, InputError):
    """The operating system refused a step of the swap of an output set (a file made read-only
    or immutable, a full disk); the previous set was put back, or what could not be is kept
    for the next writer to put back."""


def check_writable(path: Union[str, os.PathLike]) -> None:
    """Refuse a ``path`` that cannot be created or replaced: one below a file, or in a folder
    this process may not write to.

    Raises :class:`~aniso_nequip.errors.InputError` naming ``path`` and the folder at fault.
    """
    path = pathlib.Path(path)
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise InputError(f"cannot write `{path}`: `{folder}` is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"cannot write `{path}`: folder `{folder}` is not writable")
    if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
        raise InputError(f"cannot write into `{path}`: the folder is not writable")


def _beside(key: pathlib.Path) -> Tuple[pathlib.Path, str]:
    """The folder of the hidden files of the output ``key`` (lock, staging and backup folders)
    and their name prefix ``.<name>.`` (``key`` made absolute, so that ``.`` has a name)."""
    key = pathlib.Path(os.path.abspath(key))
    return key.parent, f".{key.name}."


def _holder(lock_file: pathlib.Path) -> str:
    """`` (pid N)``: the process id a lock file records, or ``""`` when it records none."""
    try:
        pid = lock_file.read_text(errors="replace").strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""


@contextlib.contextmanager
def output_lock(key: Union[str, os.PathLike], wait: bool = False) -> Iterator[None]:
    """Hold the lock of the output ``key``: a :class:`filelock.FileLock` on the hidden file
    ``.<name>.lock`` beside it, which records this process's id and is removed on release.

    The operating system releases the lock when its process dies, so a killed process never
    leaves it stuck; its lock file is simply taken over. The file is removed while still held,
    so that a process waiting on it takes a new one (``filelock`` retries on a removed file).

    Args:
        key: the output (file or folder) the lock is named after
        wait: wait for the holder to finish instead of refusing (workers sharing one output)

    Raises :class:`OutputInUseError` naming ``key`` and the holder's process id when another
    process holds the lock (and not ``wait``), :class:`~aniso_nequip.errors.InputError` when
    the lock file cannot be created.
    """
    key = pathlib.Path(key)
    beside, prefix = _beside(key)
    path = beside / f"{prefix}lock"
    lock = filelock.FileLock(path, timeout=-1 if wait else 0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise OutputInUseError(
            f"output `{key}` is in use: another aniso-nequip process{_holder(path)} is writing it; "
            "wait for it to finish or choose another output"
        ) from None
    except OSError as err:
        raise InputError(
            f"cannot write `{key}`: cannot create files in folder `{path.parent}` ({err.strerror})"
        ) from None
    try:
        with contextlib.suppress(OSError):  # Windows: the held file admits no other writer
            path.write_text(f"{os.getpid()}\n")
        yield
    finally:
        with contextlib.suppress(OSError):  # Windows: filelock removes it on release
            path.unlink()
        lock.release()


@contextlib.contextmanager
def output_set(
    folder: Union[str, os.PathLike],
    members: Sequence[str],
    force: bool = False,
    whole_folder: bool = False,
    key: Optional[Union[str, os.PathLike]] = None,
    wait: bool = False,
) -> Iterator[pathlib.Path]:
    """Claim the files ``members`` of ``folder``, yield a staging folder to write them into and,
    when the block finishes without error, swap the whole set in.

    On entry, before the caller's work: ``folder`` must be writable
    (:func:`check_writable`), no other process may be writing the set (:func:`output_lock`,
    held until the swap is done) and existing members are refused unless ``force``. Leftovers of
    a process killed while writing the set are cleaned up first (a swap it left half done is
    undone).

    On success, the staged files replace their namesakes, members the new set lacks are removed
    and other files of ``folder`` are kept; existing members are first linked into a hidden
    backup folder and restored if any step fails, and ``SIGINT``/``SIGTERM`` are held back
    until the swap is over, so Ctrl-C cannot split it. On an error or interruption inside the
    block, the staged files are discarded and the previous set stays whole.

    Args:
        folder: where the set lies (created when missing)
        members: the file names the set may hold
        force: replace an existing set
        whole_folder: ``folder`` is the command's own output folder: a non-empty one (whatever
            it holds) is refused unless ``force``, and its lock and staging folder lie beside it
        key: what the lock, the staging folder and the messages are named after (default
            ``folder``)
        wait: wait for another writer of the set instead of refusing (workers of one sweep or
            screening run)

    Raises :class:`OutputExistsError`, :class:`OutputInUseError` and
    :class:`~aniso_nequip.errors.InputError` (not writable), all before the block runs.
    """
    folder = pathlib.Path(folder)
    key = pathlib.Path(key) if key is not None else folder
    if whole_folder and folder.exists() and not folder.is_dir():
        raise OutputExistsError(f"output `{folder}` exists and is not a directory")
    check_writable(folder if whole_folder else key)
    beside, prefix = _beside(key)
    try:
        beside.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create `{beside}`: {err.strerror}") from None
    with output_lock(key, wait=wait):
        _clean_up_after_dead_writer(beside, prefix, folder)
        if whole_folder and folder.is_dir() and any(folder.iterdir()) and not force:
            raise OutputExistsError(
                f"output directory `{folder}` is not empty; choose another or pass --force to "
                "overwrite"
            )
        existing = [str(folder / m) for m in members if (folder / m).exists()]
        if existing and not force:
            raise OutputExistsError(
                f"outputs exist: {', '.join(existing)} (pass --force to overwrite)"
            )
        stage = pathlib.Path(tempfile.mkdtemp(prefix=f"{prefix}staging-", dir=beside))
        try:
            yield stage
            with _signals_held():
                _swap(stage, folder, members, beside / f"{prefix}backup-")
        finally:
            shutil.rmtree(stage, ignore_errors=True)


def _swap(stage: pathlib.Path, folder: pathlib.Path, members: Sequence[str], backup) -> None:
    """Swap the files of ``stage`` into ``folder`` (a new backup folder, named ``backup`` and a
    random suffix, holds the previous set meanwhile)."""
    staged = sorted(p.name for p in stage.iterdir())
    members = sorted(set(members) | set(staged))
    folder.mkdir(exist_ok=True)
    backup = pathlib.Path(tempfile.mkdtemp(prefix=backup.name, dir=backup.parent))
    existing = [m for m in members if (folder / m).exists()]
    for name in existing:
        try:
            os.link(folder / name, backup / name)
        except OSError:  # a file system without hard links
            shutil.copy2(folder / name, backup / name)
    partial = backup / f"{_MANIFEST}.partial"  # complete or absent: a killed process may leave it
    partial.write_text(json.dumps({"members": members, "existing": existing}))
    os.replace(partial, backup / _MANIFEST)
    try:
        for name in staged:
            os.replace(stage / name, folder / name)
        for name in set(existing) - set(staged):
            (folder / name).unlink()
    except BaseException as err:
        left = _restore(backup, folder)
        if not isinstance(err, OSError):
            raise
        raise OutputWriteError(
            f"cannot write `{err.filename or folder}`: {err.strerror or err}; "
            + _restored_text(left, backup, folder)
        ) from None
    shutil.rmtree(backup)


def _restored_text(left: Sequence[str], backup: pathlib.Path, folder: pathlib.Path) -> str:
    if not left:
        return f"the previous files of `{folder}` were kept"
    return (
        f"{', '.join(left)} could not be put back into `{folder}`: they are kept in `{backup}`, "
        "which the next run to this output puts back first"
    )


def _restore(backup: pathlib.Path, folder: pathlib.Path) -> list:
    """Put back the set saved in ``backup`` and remove the files added beside it; returns the
    names it could not put back, which stay in ``backup`` (its manifest updated to name only
    them), else removes ``backup``. A file still in place (the same file as its backup: the
    swap never reached it) and one already put back (no backup left) are skipped."""
    manifest = json.loads((backup / _MANIFEST).read_text())
    left = []
    for name in manifest["members"]:
        saved, target = backup / name, folder / name
        try:
            if name not in manifest["existing"]:
                target.unlink(missing_ok=True)
            elif not saved.exists():
                continue
            elif target.exists() and os.path.samefile(saved, target):
                saved.unlink()
            else:
                os.replace(saved, target)
        except OSError:
            left.append(name)
    if not left:
        shutil.rmtree(backup)
        return left
    kept = [n for n in manifest["existing"] if n in left]
    partial = backup / f"{_MANIFEST}.partial"
    partial.write_text(json.dumps({"members": left, "existing": kept}))
    os.replace(partial, backup / _MANIFEST)
    return left


def _clean_up_after_dead_writer(beside: pathlib.Path, prefix: str, folder: pathlib.Path) -> None:
    """Remove the staging folders in ``beside`` named ``<prefix>staging-*`` and undo a swap into
    ``folder`` that a killed process left half done (its backup folder ``<prefix>backup-*``
    holds the previous set); the caller holds the lock."""
    for stale in beside.glob(f"{prefix}staging-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for backup in beside.glob(f"{prefix}backup-*"):
        if not (backup / _MANIFEST).is_file():  # killed before its manifest: nothing replaced
            shutil.rmtree(backup, ignore_errors=True)
            continue
        left = _restore(backup, folder)
        if left:
            raise OutputWriteError(
                f"a previous run could not finish writing `{folder}`: the previous "
                f"{', '.join(left)} are still kept in `{backup}` and cannot be put back; make "
                "those files writable (or remove them and that folder) and run again",
            )


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold back ``SIGINT`` and ``SIGTERM`` during the block and deliver them after it.

    Python runs signal handlers in the main thread only, whichever thread the signal reaches, so
    replacing the handlers (rather than masking one thread) holds them back reliably; outside
    the main thread nothing is changed (no ``KeyboardInterrupt`` can arise there).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = []
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(signum)
        if handler is not None:  # None: a handler not installed from Python, left alone
            previous[signum] = signal.signal(signum, lambda s, _: held.append(s))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in held:
            signal.raise_signal(signum)


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
