"""Optuna storages from URLs: RDB (``sqlite:///``, ``postgresql://``, ``mysql://``) or a journal
file on a shared file system (``journal:///path/to/study.log``)."""

import pathlib
import random
import time

JOURNAL_PREFIX = "journal://"


def open_storage(url: str):
    """An optuna storage for ``url``; RDB storages get heartbeats so that trials of a killed
    worker are marked failed by the next worker instead of staying "running" forever."""
    import optuna

    if url.startswith(JOURNAL_PREFIX):
        from optuna.storages.journal import JournalFileBackend

        path = pathlib.Path(url[len(JOURNAL_PREFIX) :])
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("sqlite:///"):
        pathlib.Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    # workers started together race to create the schema: the loser retries
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, heartbeat_interval=60, grace_period=180)
        except Exception:  # sqlalchemy's errors for a schema being created concurrently
            if attempt == 4:
                raise
            time.sleep(1.0 + random.random())
