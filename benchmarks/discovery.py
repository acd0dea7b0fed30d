"""Discovery benchmark (issue 29): does a recipe find the most anisotropic crystals?

5-fold cross-validation over all 1,104 bundled ``mp_subset`` crystals (its train, val and test
files together) with folds grouped by chemical system (no set of elements in two folds, so the
alloys of one family cannot leak; :func:`aniso_nequip.data.splits.grouped_folds`), one model per
fold and seed, out-of-fold predictions for every crystal. Each fold's training part keeps a
grouped tenth as validation (checkpoint selection of neural rows). Per fold:
:func:`aniso_nequip.metrics.discovery_metrics` (Spearman of ``a_r``, recall of the 5% most
anisotropic crystals in the predicted top 5%, MAE ``a_r`` over crystals with ``a_r >= 1.5``,
MAE ``eps_poly``) on the fold's test crystals and on the bundled ``phonondb`` crystals (PBEsol)
less those matched to an ``mp_subset`` crystal, and the wall time; the table gives mean +- std
over folds (and seeds).

Rows (:data:`ROWS`) are recipes: a neural one is ``nequip-train -cn CONFIG`` with overrides on
per-fold extxyz files written here, its best checkpoint predicting the held-out crystals; a
ridge one is a closed-form fit on mean-pooled frozen SevenNet-0 features (:func:`ridge_fold`),
computed once with the project's own backbone code and cached per structure. A failing row
records its error (``*.error.json``) and the next one runs. Finished folds are not run again
(one result file per row, seed and fold, written atomically), so a comparison can span sessions.
``--jobs N`` trains N neural folds at a time, the cores divided among them: on a 2-core CPU two
one-thread trainings get through more folds per hour than one two-thread training.

    python -m benchmarks.discovery                                   # every row, 5 folds, seed 0
    python -m benchmarks.discovery --rows ridge_b1_log ridge_b1_linear
    python -m benchmarks.discovery --rows baseline --folds 0 --max-epochs 10 --max-minutes 30
    python -m benchmarks.discovery --rows baseline log_select_spearman --seeds 0 1 2  # final pair
    python -m benchmarks.discovery --rows backbone_1 loss_mse --jobs 2   # two folds at a time
    python -m benchmarks.discovery --rows ridge_b1_log --slice 60 --folds 0 1 # smoke run
    python -m benchmarks.results                                     # tables -> RESULTS.md
    python -m benchmarks.discovery --card log_select_spearman   # the ready model's recipe -> card

Every neural row but ``baseline`` is one change (or a stated combination) on :data:`BASELINE`,
the foundation config as shipped until 2026-12-01, and is paired with it on the same folds and
seeds.
"""

import argparse
import dataclasses
import hashlib
import json
import os
import pathlib
import re
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "runs" / "discovery"
WORK = ROOT / "benchmarks" / "runs" / "discovery_work"
MP_FILES = [f"datasets/mp_subset_{s}.extxyz.gz" for s in ("train", "val", "test")]
OOD_FILES = [f"datasets/phonondb_{s}.extxyz.gz" for s in ("train", "val", "test")]
FOUNDATION = "configs/anisonet_foundation.yaml"
BACKBONE, BACKBONE_BLOCKS = "7net-0", 2
N_FOLDS, VAL_FOLDS, INNER_FOLDS = 5, 10, 3
KEYS = ("spearman_a_r", "top_recall", "tail_a_r_mae", "eps_poly_mae")
FOLD_LINE = re.compile(r"\S+ seed \d+ fold \d+: ")  # what run_fold prints of a fold
# relative L2 strengths of the ridge (times the mean diagonal of its kernel), chosen by inner CV
RIDGE_STRENGTHS = np.logspace(-5, 1, 13)


@dataclasses.dataclass(frozen=True)
class Row:
    """A recipe: ``nequip-train -cn config`` with ``overrides``, or with ``ridge = (block,
    space)`` the closed-form ridge on frozen backbone features after ``block`` predicting in
    ``space`` (``linear``: the tensor; ``log``: ``L = logm(eps - I)``, ``eps = I + expm(L)``)."""

    name: str
    what: str
    overrides: Tuple[str, ...] = ()
    config: str = FOUNDATION
    ridge: Optional[Tuple[int, str]] = None


def _ridge_row(block, space):
    target = "tensor" if space == "linear" else "log-space L = logm(eps - I), eps = I + expm(L)"
    return Row(
        f"ridge_b{block}_{space}",
        f"ridge on pooled frozen SevenNet-0 features after block {block}, {target}",
        ridge=(block, space),
    )


BASELINE = ("readout=linear", "monitor=val0_epoch/weighted_sum", "monitor_mode=min")
"""What the ``baseline`` row sets: the foundation config as shipped until 2026-12-01 (the base of
every one-change row; the config itself now ships ``log_select_spearman``'s values)."""
SELECT_SPEARMAN = ("monitor=val0_epoch/a_r_spearman", "monitor_mode=max")
BASELINE_ROW = "baseline"  # what every row is paired with


def on_baseline(*changes: str) -> Tuple[str, ...]:
    """:data:`BASELINE` with ``changes`` (``name=value``) in place of its own values of those
    variables: one change at a time."""
    names = {c.split("=")[0] for c in changes}
    return tuple(o for o in BASELINE if o.split("=")[0] not in names) + changes


ROWS = [
    Row(
        BASELINE_ROW,
        f"{FOUNDATION} as shipped until 2026-12-01: frozen 2 blocks, 1 gated convolution, "
        "readout linear, MAE loss, selection by validation loss",
        BASELINE,
    ),
    Row("backbone_1", "backbone depth 1 block", on_baseline("backbone_layers=1")),
    *(
        Row(f"readout_{r}", f"readout {r}", on_baseline(f"readout={r}"))
        for r in ("square", "log", "local_field")  # linear: the baseline row
    ),
    Row("loss_mse", "MSE loss on the 0e+2e coefficients", on_baseline("loss_metric=mse")),
    Row(
        "loss_log_eigen",
        "loss on log-eigenvalues: MAE of the 0e+2e coefficients of logm(eps - I)",
        on_baseline("loss_metric=log_mae"),
    ),
    Row("weight_decay_0", "no weight decay (baseline 0.03)", on_baseline("weight_decay=0.0")),
    Row("weight_decay_0.3", "weight decay 0.3 (baseline 0.03)", on_baseline("weight_decay=0.3")),
    Row("head_16", "head of 16 features (baseline 32)", on_baseline("num_features=16")),
    Row("head_64", "head of 64 features (baseline 32)", on_baseline("num_features=64")),
    Row(
        "dropout_0.1",
        "head dropout 0.1 (whole irreps of the features the readout reads)",
        on_baseline("head_dropout=0.1"),
    ),
    Row(
        "head_input_16",
        "backbone features mapped to 16 channels of each irrep before the head (baseline: "
        "all 448 channels; epochs about 3x faster)",
        on_baseline("head_input_features=16"),
    ),
    Row(
        "linear_probe",
        "no head convolution: per-atom linear readout",
        on_baseline("num_layers=0"),
    ),
    Row(
        "select_a_r",
        "checkpoint and early stopping by validation MAE a_r",
        on_baseline("monitor=val0_epoch/a_r_mae"),
    ),
    Row(
        "select_spearman",
        "checkpoint and early stopping by validation Spearman a_r",
        on_baseline(*SELECT_SPEARMAN),
    ),
    Row(
        "finetune",
        "backbone fine-tuned at backbone_lr 3e-4",
        on_baseline("freeze_backbone=false"),
    ),
    Row(
        "log_select_spearman",
        "combination: readout log and selection by validation Spearman a_r (the two single "
        "changes that raised top-5% recall on the first folds); the ready model's recipe "
        f"since 2026-12-01 ({FOUNDATION} as it is now)",
        on_baseline("readout=log", *SELECT_SPEARMAN),
    ),
    Row(
        "log_select_spearman_input_16",
        "combination: log_select_spearman on backbone features mapped to 16 channels of each "
        "irrep (head_input_16)",
        on_baseline("readout=log", *SELECT_SPEARMAN, "head_input_features=16"),
    ),
    *(_ridge_row(block, space) for block in (1, 2) for space in ("linear", "log")),
]
ROW_NAMES = {row.name: row for row in ROWS}
# what the table cannot say yet
NOT_YET = {
    "the best combination": "weight_decay_0, weight_decay_0.3, head_64, dropout_0.1, "
    "linear_probe, select_a_r, readout_square and finetune have not run; head_input_16 and "
    "its combination rank worse",
}


def structure_key(atoms) -> str:
    """A key of the structure alone (elements, positions, cell, to 1e-6 A)."""
    h = hashlib.sha1(np.asarray(atoms.numbers, dtype=np.int64).tobytes())
    for array in (atoms.positions, atoms.cell.array):
        h.update(np.round(np.asarray(array, dtype=np.float64), 6).tobytes())
    return h.hexdigest()


class Benchmark:
    """The crystals, folds, out-of-distribution set and caches of one benchmark run.

    Args:
        work: folder of fold files, trainings and caches (not results)
        split_seed: seed of the folds
        slice_n: keep the first ``slice_n`` crystals of each collection (smoke runs)
    """

    def __init__(self, work: pathlib.Path, split_seed: int = 0, slice_n: Optional[int] = None):
        from aniso_nequip.data.splits import chemical_system, grouped_folds
        from aniso_nequip.data.validation import reference_tensor

        self.work, self.split_seed = work, split_seed
        self.frames = _read(MP_FILES, slice_n)
        self.eps = np.stack([reference_tensor(a) for a in self.frames])
        self.groups = np.array([chemical_system(a) for a in self.frames])
        self.fold = grouped_folds(self.groups, N_FOLDS, split_seed)
        self.ood = self._ood(slice_n)
        self.ood_eps = np.stack([reference_tensor(a) for a in self.ood])
        self._features = None
        self._decompositions = {}

    def _ood(self, slice_n):
        """The phonondb crystals (its three files) that match no mp_subset crystal."""
        from aniso_nequip.data.matching import StructureIndex

        frames = _read(OOD_FILES, slice_n)
        cache = self.work / f"phonondb_not_in_mp{f'_slice{slice_n}' if slice_n else ''}.json"
        if cache.is_file():
            keep = json.loads(cache.read_text())
        else:
            index = StructureIndex(self.frames)
            keep = [i for i, a in enumerate(frames) if a not in index]
            _write_json(cache, keep)
        return [frames[i] for i in keep]

    def split(self, k: int) -> Dict[str, np.ndarray]:
        """Indices of fold ``k``'s ``train``, ``val`` (a grouped tenth of its training part) and
        ``test`` crystals."""
        from aniso_nequip.data.splits import grouped_folds

        rest = np.flatnonzero(self.fold != k)
        n_val = min(VAL_FOLDS, len(set(self.groups[rest])))
        val = grouped_folds(self.groups[rest], n_val, self.split_seed + 1 + k) == 0
        return {"train": rest[~val], "val": rest[val], "test": np.flatnonzero(self.fold == k)}

    def fold_files(self, k: int) -> Dict[str, pathlib.Path]:
        """extxyz files of fold ``k``'s parts (written once)."""
        import ase.io

        from aniso_nequip.io import atomic_file

        folder = self.work / "folds" / f"seed{self.split_seed}_fold{k}"
        paths = {}
        for part, indices in self.split(k).items():
            paths[part] = folder / f"{part}.extxyz"
            if not paths[part].is_file():
                with atomic_file(paths[part], force=True) as tmp:
                    ase.io.write(tmp, [self.frames[i] for i in indices], format="extxyz")
        return paths

    def features(self) -> Dict[str, np.ndarray]:
        """Mean-pooled ``0e`` ``(N, C0)`` and ``2e`` ``(N, C2, 5)`` backbone features after each
        block (keys ``b1_0e``, ``b1_2e``, ...) of the mp_subset crystals then the
        out-of-distribution ones, read from a per-structure cache and computed where missing."""
        if self._features is None:
            frames = self.frames + self.ood
            self._features = cached_features(frames, self.work / f"features_{BACKBONE}.npz")
        return self._features

    def decomposition(self, key, kernel):
        """``eigh(kernel)``, memoised under ``key`` (the same kernel serves both target spaces
        of a fold and block), forgetting those of other folds and blocks (``key[:2]``)."""
        if key not in self._decompositions:
            self._decompositions = {
                k: v for k, v in self._decompositions.items() if k[:2] == key[:2]
            }
            self._decompositions[key] = np.linalg.eigh(kernel)
        return self._decompositions[key]


def _read(files: Sequence[str], slice_n: Optional[int] = None) -> List:
    """The frames of ``files`` one after another (only the first ``slice_n``)."""
    import ase.io

    frames = []
    for f in files:
        frames += ase.io.read(ROOT / f, f":{slice_n - len(frames)}" if slice_n else ":")
    return frames[:slice_n]


def _write_json(path: pathlib.Path, obj) -> None:
    from aniso_nequip.io import atomic_file

    with atomic_file(path, force=True) as tmp:
        tmp.write_text(json.dumps(obj, indent=1))


def pooled_features(frames: Sequence, batch_size: int = 16) -> Dict[str, np.ndarray]:
    """Mean-pooled ``0e`` and ``2e`` node features of ``frames`` after each of the first
    :data:`BACKBONE_BLOCKS` blocks of the frozen backbone, as the foundation model builds it
    (:func:`aniso_nequip.model.sevennet_backbone.sevennet_backbone`, inversion-symmetrised: exactly
    O(3)-equivariant), one backbone per depth."""
    import torch
    from e3nn import o3
    from nequip.data import AtomicDataDict

    from aniso_nequip.data.graphs import atoms_to_graphs
    from aniso_nequip.model.sevennet_backbone import sevennet_backbone

    names = sorted({s for a in frames for s in a.get_chemical_symbols()})
    out = {}
    for blocks in range(1, BACKBONE_BLOCKS + 1):
        backbone = sevennet_backbone(BACKBONE, names, 5.0, blocks).eval()
        irreps = o3.Irreps(backbone.irreps_out[AtomicDataDict.NODE_FEATURES_KEY])
        pooled = []
        for start in range(0, len(frames), batch_size):
            graphs = atoms_to_graphs(frames[start : start + batch_size], names, 5.0, False)
            with torch.no_grad():
                x = backbone(graphs)[AtomicDataDict.NODE_FEATURES_KEY].double()
            batch = graphs[AtomicDataDict.BATCH_KEY]
            counts = torch.bincount(batch).unsqueeze(-1)
            zeros = torch.zeros(len(counts), x.shape[1], dtype=torch.float64)
            pooled.append(zeros.index_add_(0, batch, x) / counts)
        pooled = torch.cat(pooled)
        for (mul, ir), part in zip(irreps, irreps.slices()):
            if str(ir) in ("0e", "2e"):
                out[f"b{blocks}_{ir}"] = pooled[:, part].reshape(len(frames), mul, -1).squeeze(-1)
    return {k: v.numpy() for k, v in out.items()}


def cached_features(frames: Sequence, path: pathlib.Path) -> Dict[str, np.ndarray]:
    """:func:`pooled_features` of ``frames``, read from the ``.npz`` cache ``path`` (keyed by
    :func:`structure_key`) and computed (and added to it) where missing."""
    from aniso_nequip.io import atomic_file

    keys = [structure_key(a) for a in frames]
    cache = dict(np.load(path)) if path.is_file() else {"key": np.array([], dtype=str)}
    known = {k: i for i, k in enumerate(cache["key"].tolist())}
    missing = sorted({i for i, k in enumerate(keys) if k not in known})
    if missing:
        start = time.time()
        print(f"computing {BACKBONE} features of {len(missing)} crystals", flush=True)
        new = pooled_features([frames[i] for i in missing])
        print(f"  {time.time() - start:.0f} s", flush=True)
        cache = {
            name: np.concatenate([cache[name], new[name]]) if name in cache else new[name]
            for name in new
        } | {"key": np.concatenate([cache["key"], [keys[i] for i in missing]])}
        with atomic_file(path, force=True) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **cache)
        known = {k: i for i, k in enumerate(cache["key"].tolist())}
    rows = [known[k] for k in keys]
    return {name: value[rows] for name, value in cache.items() if name != "key"}


def to_target(eps: np.ndarray, space: str) -> np.ndarray:
    """``1x0e+1x2e`` coefficients ``(N, 6)`` of ``eps`` (``linear``) or of ``logm(eps - I)``
    (``log``)."""
    import torch

    from aniso_nequip.tensors import to_irreps

    t = torch.as_tensor(eps, dtype=torch.float64)
    if space == "log":
        w, v = torch.linalg.eigh(t - torch.eye(3, dtype=t.dtype))
        t = v @ torch.diag_embed(torch.log(w)) @ v.transpose(-1, -2)
    return to_irreps(t).numpy()


def from_target(coefficients: np.ndarray, space: str) -> np.ndarray:
    """The tensors ``(N, 3, 3)`` of :func:`to_target`'s coefficients."""
    import torch

    from aniso_nequip.tensors import from_irreps

    t = from_irreps(torch.as_tensor(coefficients, dtype=torch.float64))
    if space == "log":
        t = torch.eye(3, dtype=t.dtype) + torch.linalg.matrix_exp(t)
    return t.numpy()


def _kernels(scalars, tensors):
    """Kernels of the ridge's two parts from standardised features: the ``0e`` part's
    ``S S^T`` (crystals x crystals) and the ``2e`` part's, whose features are each pooled
    ``2e`` channel times each of ``[1, pooled scalars]`` (the same weights for the 5
    components, so the fit is equivariant): ``(1 + s.s') (c_m . c'_m')`` over rows
    ``(crystal, component m)``."""

    def k0(a, b):
        return scalars[a] @ scalars[b].T

    def k2(a, b):
        ca = tensors[a].transpose(0, 2, 1).reshape(-1, tensors.shape[1])
        cb = tensors[b].transpose(0, 2, 1).reshape(-1, tensors.shape[1])
        return np.repeat(np.repeat(1.0 + k0(a, b), 5, 0), 5, 1) * (ca @ cb.T)

    return k0, k2


def _ridge_predictions(bench, key, kernel, train, targets, others, center):
    """Ridge predictions on each of ``others`` (index arrays) for every strength of
    :data:`RIDGE_STRENGTHS`: ``[(S, n_other, ...)]`` from the dual solution on ``train``, with
    an unregularised mean of the targets when ``center`` (the ``0e`` part; a constant ``2e``
    part would not rotate with the crystal)."""
    k_train = kernel(train, train)
    w, q = bench.decomposition(key, k_train)
    mean = targets.mean() if center else 0.0
    qty = q.T @ (targets - mean)
    scale = np.trace(k_train) / len(k_train)
    k_others = [kernel(o, train) for o in others]
    out = [[] for _ in others]
    for s in RIDGE_STRENGTHS:
        coef = q @ (qty / (w + s * scale))
        for i, k in enumerate(k_others):
            out[i].append(k @ coef + mean)
    return [np.stack(o) for o in out]


def ridge_fold(bench: Benchmark, row: Row, k: int) -> Dict:
    """Fit fold ``k``'s training crystals (training and validation parts) in closed form and
    predict its test crystals and the out-of-distribution ones. The ``0e`` and ``2e`` parts
    (:func:`_kernels`) each get the L2 strength of least inner-CV error (grouped folds of the
    training crystals)."""
    from aniso_nequip.data.splits import grouped_folds

    block, space = row.ridge
    feats = bench.features()
    n_mp = len(bench.frames)
    split = bench.split(k)
    train, test = np.concatenate([split["train"], split["val"]]), split["test"]
    ood = n_mp + np.arange(len(bench.ood))
    scalars, tensors = feats[f"b{block}_0e"], feats[f"b{block}_2e"]
    mu, sd = scalars[train].mean(0), scalars[train].std(0) + 1e-12
    scalars = (scalars - mu) / sd / np.sqrt(scalars.shape[1])
    tensors = tensors / np.sqrt((tensors[train] ** 2).sum(-1).mean(0))[None, :, None]
    k0, k2 = _kernels(scalars, tensors)
    y = to_target(bench.eps, space)
    parts = {"0e": (k0, lambda idx: y[idx, 0]), "2e": (k2, lambda idx: y[idx, 1:].reshape(-1))}
    inner = grouped_folds(
        bench.groups[train],
        min(INNER_FOLDS, len(set(bench.groups[train]))),
        bench.split_seed + 100 + k,
    )
    predicted, chosen = {}, {}
    for part, (kernel, target) in parts.items():
        errors = 0.0
        for j in range(inner.max() + 1):
            fit, held = train[inner != j], train[inner == j]
            (pred,) = _ridge_predictions(
                bench, (block, k, j, part), kernel, fit, target(fit), [held], part == "0e"
            )
            errors = errors + ((pred - target(held)) ** 2).mean(1)
        best = int(np.argmin(errors))
        chosen[part] = float(RIDGE_STRENGTHS[best])
        preds = _ridge_predictions(
            bench, (block, k, None, part), kernel, train, target(train), [test, ood], part == "0e"
        )
        predicted[part] = [p[best] for p in preds]
    test_eps, ood_eps = (
        from_target(
            np.concatenate([predicted["0e"][i][:, None], predicted["2e"][i].reshape(-1, 5)], 1),
            space,
        )
        for i in range(2)
    )
    return {"test": test_eps, "ood": ood_eps, "extra": {"l2_strength": chosen}}


def _train_log_error(log: pathlib.Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "error" in line]
    return (errors or lines or ["no output"])[-1][:300]


def _epochs_run_best(run_dir: pathlib.Path) -> List[int]:
    """Validation epochs run, and the epoch (counted from 1) of ``best.ckpt``: the one its
    ModelCheckpoint chose by what it monitors (the validation loss, or a ``select_*`` row's
    metric)."""
    import torch

    from benchmarks.accuracy import _epochs

    checkpoint = torch.load(run_dir / "best.ckpt", map_location="cpu", weights_only=False)
    return [_epochs(run_dir)[0], checkpoint["epoch"] + 1]


def neural_fold(
    bench: Benchmark,
    row: Row,
    k: int,
    seed: int,
    max_epochs=None,
    max_minutes=None,
    threads=None,
    concurrent=1,
) -> Dict:
    """Train ``row``'s config on fold ``k`` (``nequip-train``, validation part for checkpoint
    selection; at most ``max_epochs`` and ``max_minutes`` when given; ``threads`` torch threads
    when given, ``concurrent`` the folds sharing the machine, as recorded) unless an earlier run
    finished, and predict with its best checkpoint."""
    from aniso_nequip.inference import predict
    from benchmarks.accuracy import _max_time

    files = bench.fold_files(k)
    run_dir = bench.work / row.name / f"seed{seed}_fold{k}"
    wall_file = run_dir / "train_wall_s.txt"
    if not (wall_file.is_file() and (run_dir / "best.ckpt").is_file()):
        run_dir.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "nequip.scripts.train",
            "-cn",
            row.config,
            f"seed={seed}",
            f"hydra.run.dir={run_dir}",
            "run=[train]",
            f"train_file={files['train']}",
            f"val_file={files['val']}",
            f"test_file={files['test']}",
            *([f"max_epochs={max_epochs}"] if max_epochs else []),
            *([f"+trainer.max_time={_max_time(max_minutes)}"] if max_minutes else []),
            *row.overrides,
        ]
        start = time.time()
        env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
        with open(run_dir / "train.out", "w") as log:
            result = subprocess.run(
                command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        if result.returncode:
            raise RuntimeError(
                f"nequip-train failed ({_train_log_error(run_dir / 'train.out')}); "
                f"log: {run_dir / 'train.out'}"
            )
        wall_file.write_text(f"{time.time() - start:.1f}")
    ckpt = str(run_dir / "best.ckpt")
    test = [bench.frames[i] for i in bench.split(k)["test"]]
    return {
        "test": predict(test, ckpt, device="cpu", checked=True),
        "ood": predict(bench.ood, ckpt, device="cpu", checked=True),
        "extra": {
            "train_wall_s": float(wall_file.read_text()),
            "max_epochs": max_epochs,
            "max_minutes": max_minutes,
            "threads": threads,
            "concurrent_folds": concurrent,
            "epochs_run_best": _epochs_run_best(run_dir),
        },
    }


def run_fold(bench: Benchmark, row: Row, k: int, seed: int, out: pathlib.Path, **limits):
    """Run one fold of one row unless its result file exists; write the result (or the error,
    ``*.error.json``) atomically. Returns the result, or ``None`` after an error."""
    from aniso_nequip.data.matching import frame_label
    from aniso_nequip.metrics import discovery_metrics
    from benchmarks.machine import describe

    path = out / row.name / f"seed{seed}_fold{k}.json"
    error_path = path.with_suffix(".error.json")
    if path.is_file():
        return json.loads(path.read_text())
    start = time.time()
    try:
        if row.ridge:
            result = ridge_fold(bench, row, k)
        else:
            result = neural_fold(bench, row, k, seed, **limits)
    except Exception as err:  # a failing row reports and the benchmark moves on
        message = f"{type(err).__name__}: {err}"
        print(f"{row.name} seed {seed} fold {k}: FAILED: {message}", flush=True)
        _write_json(error_path, {"row": row.name, "seed": seed, "fold": k, "error": message})
        return None
    test = bench.split(k)["test"]
    summary = {
        "row": row.name,
        "what": row.what,
        "config": None if row.ridge else row.config,
        "overrides": list(row.overrides),
        "seed": seed,
        "fold": k,
        "split_seed": bench.split_seed,
        "n_crystals": len(bench.frames),
        "wall_s": round(time.time() - start, 1),
        "machine": describe(),
        **result["extra"],
        "mp": discovery_metrics(bench.eps[test], result["test"]),
        "phonondb": discovery_metrics(bench.ood_eps, result["ood"]),
        "test_ids": [frame_label(bench.frames[i], int(i)) for i in test],
        "test_index": test.tolist(),
        "predicted": np.round(result["test"].reshape(-1, 9), 5).tolist(),
    }
    _write_json(path, summary)
    if error_path.is_file():
        error_path.unlink()
    m = summary["mp"]
    print(
        f"{row.name} seed {seed} fold {k}: Spearman a_r {m['spearman_a_r']:.3f}, top-5% "
        f"recall {m['top_recall']:.2f}, tail MAE a_r {m['tail_a_r_mae']:.3f}, MAE eps_poly "
        f"{m['eps_poly_mae']:.3f} ({summary['wall_s']:.0f} s)",
        flush=True,
    )
    return summary


def run_concurrently(args, rows: Sequence[Row], out: pathlib.Path) -> None:
    """The unfinished neural folds of ``rows`` as processes of this script, ``args.jobs`` at a
    time, each training with the machine's cores divided among them (on a small CPU, two
    one-thread trainings get through more folds per hour than one two-thread training)."""
    from concurrent.futures import ThreadPoolExecutor

    threads = max(1, len(os.sched_getaffinity(0)) // args.jobs)
    common = ["--split-seed", str(args.split_seed), "--work", str(args.work), "--out", str(out)]
    for flag, value in (
        ("--max-epochs", args.max_epochs),
        ("--max-minutes", args.max_minutes),
        ("--slice", args.slice_n),
    ):
        common += [flag, str(value)] if value else []
    common += ["--threads", str(threads), "--concurrent", str(args.jobs)]
    tasks = [
        [sys.executable, "-m", "benchmarks.discovery", "--rows", row.name]
        + ["--seeds", str(seed), "--folds", str(k), *common]
        for row in rows
        for seed in args.seeds
        for k in args.folds
        if not (out / row.name / f"seed{seed}_fold{k}.json").is_file()
    ]

    def run(command):
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if FOLD_LINE.match(line)]
        return lines or [f"{' '.join(command[3:9])}: exit {done.returncode}: {done.stderr[-300:]}"]

    with ThreadPoolExecutor(args.jobs) as pool:
        for lines in pool.map(run, tasks):
            print("\n".join(lines), flush=True)


def _cell(values, digits=3):
    values = [v for v in values if v == v]
    if not values:
        return ""
    mean, std = float(np.mean(values)), float(np.std(values))
    return f"{mean:.{digits}f}" if len(values) == 1 else f"{mean:.{digits}f} ± {std:.{digits}f}"


def paired_differences(runs, baseline, keys=KEYS) -> Tuple[Dict[str, float], int]:
    """Mean differences of ``runs``' mp_subset metrics ``keys`` from those of ``baseline``'s runs
    of the same seeds and folds, and the number of such pairs (the spread over folds is mostly
    the folds' own: the paired difference is what compares rows)."""
    base = {(r["seed"], r["fold"]): r["mp"] for r in baseline}
    pairs = [(r["mp"], base[r["seed"], r["fold"]]) for r in runs if (r["seed"], r["fold"]) in base]
    deltas = {key: float(np.mean([a[key] - b[key] for a, b in pairs])) for key in keys if pairs}
    return deltas, len(pairs)


def _paired(runs, baseline) -> str:
    deltas, n = paired_differences(runs, baseline, ("spearman_a_r", "top_recall", "eps_poly_mae"))
    return " / ".join(f"{d:+.3f}" for d in deltas.values()) + f" ({n})" if n else ""


def _fold_minutes(run: Dict) -> float:
    """A fold's wall time in minutes, its training's included when the fold resumed after a
    finished training (its ``wall_s`` is then the prediction alone, shorter than the training)."""
    trained = run.get("train_wall_s") or 0.0
    return (run["wall_s"] + (trained if trained > run["wall_s"] else 0.0)) / 60


def _runs(out: pathlib.Path, name: str) -> List[Dict]:
    return [json.loads(p.read_text()) for p in sorted((out / name).glob("seed*_fold?.json"))]


def card_summary(bench: Benchmark, name: str, out: pathlib.Path = OUT, worst: int = 5) -> Dict:
    """Row ``name``'s discovery figures for a model card: mean and std over its folds and seeds
    on mp_subset (out of fold) and phonondb, the paired differences from ``baseline`` on the same
    folds, and the ``worst`` crystals whose out-of-fold ``a_r`` (first seed) is furthest from
    DFPT's."""
    from release.ship_model import largest_a_r_errors

    runs = _runs(out, name)
    if not runs:
        raise SystemExit(f"discovery row {name!r} has no fold results in {out}")
    seed = min(r["seed"] for r in runs)
    index = np.concatenate([r["test_index"] for r in runs if r["seed"] == seed])
    ids = [label for r in runs if r["seed"] == seed for label in r["test_ids"]]
    predicted = np.concatenate(
        [np.reshape(r["predicted"], (-1, 3, 3)) for r in runs if r["seed"] == seed]
    )
    deltas, pairs = paired_differences(runs, _runs(out, BASELINE_ROW))

    def spread(values):
        return {"mean": float(np.mean(values)), "std": float(np.std(values))}

    return {
        "row": name,
        "what": ROW_NAMES[name].what,
        "overrides": list(ROW_NAMES[name].overrides),
        "folds": sorted({r["fold"] for r in runs}),
        "seeds": sorted({r["seed"] for r in runs}),
        "n_crystals": runs[0]["n_crystals"],
        **{
            part: {key: spread([r[part][key] for r in runs]) for key in KEYS}
            for part in ("mp", "phonondb")
        },
        "paired_vs_baseline": deltas if pairs and name != BASELINE_ROW else None,
        "largest_a_r_errors": largest_a_r_errors(
            [bench.frames[i] for i in index], bench.eps[index], predicted, worst, ids
        ),
    }


def update_card(bench: Benchmark, name: str, shipped: pathlib.Path, out: pathlib.Path = OUT):
    """Write row ``name``'s :func:`card_summary` into the model card in ``shipped``
    (``discovery`` in ``model_card.json``, and ``MODEL_CARD.md`` rendered again; both files
    replaced together or neither)."""
    from aniso_nequip.io import output_set
    from release.ship_model import model_card_markdown

    card = json.loads((shipped / "model_card.json").read_text())
    card["discovery"] = card_summary(bench, name, out)
    members = ["model_card.json", "MODEL_CARD.md"]
    with output_set(shipped, members, force=True, key=shipped / members[0]) as stage:
        (stage / members[0]).write_text(json.dumps(card, indent=2) + "\n")
        (stage / members[1]).write_text(model_card_markdown(card))
    return card["discovery"]


def table(out: pathlib.Path = OUT) -> str:
    """Markdown table of every row's fold results under ``out`` (mean +- std over folds and
    seeds, and the paired differences from the ``baseline`` row on the same folds), the errors
    of rows that failed, and the rows not yet available."""
    header = (
        "row",
        "what",
        "folds x seeds",
        "Spearman a_r",
        "top-5% recall",
        "MAE a_r (a_r >= 1.5)",
        "MAE eps_poly",
        "phonondb: Spearman a_r",
        "top-5% recall",
        "MAE a_r (a_r >= 1.5)",
        "MAE eps_poly",
        "vs baseline, same folds: Δ Spearman / Δ recall / Δ MAE eps_poly (folds)",
        "wall per fold (min)",
        "machine",
    )
    baseline = _runs(out, BASELINE_ROW)
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in ROWS:
        runs = _runs(out, row.name)
        errors = [json.loads(p.read_text()) for p in sorted((out / row.name).glob("*.error.json"))]
        if not runs:
            status = f"failed: {errors[0]['error'][:160]}" if errors else "not run yet"
            lines.append(f"| {row.name} | {row.what} | {status} |" + " |" * (len(header) - 3))
            continue
        seeds = sorted({r["seed"] for r in runs})
        folds = sorted({r["fold"] for r in runs})
        epochs = [r["epochs_run_best"] for r in runs if "epochs_run_best" in r]
        limits = sorted({r["max_minutes"] for r in runs if r.get("max_minutes")})
        shared = sorted({r["concurrent_folds"] for r in runs if r.get("concurrent_folds", 1) > 1})
        what = row.what + (
            " (epochs run (best): "
            + ", ".join(f"{e} ({b})" for e, b in epochs)
            + (
                f"; time limit {', '.join(f'{m:g}' for m in limits)} min per training"
                if limits
                else ""
            )
            + "".join(f"; some folds ran {n} at a time (wall per fold: each's own)" for n in shared)
            + ")"
            if epochs
            else ""
        )
        m = runs[0]["machine"]
        cells = [
            row.name,
            what,
            f"{len(folds)} x {len(seeds)}",
            *(_cell([r["mp"][key] for r in runs]) for key in KEYS),
            *(_cell([r["phonondb"][key] for r in runs]) for key in KEYS),
            "" if row.name == BASELINE_ROW else _paired(runs, baseline),
            _cell([_fold_minutes(r) for r in runs], 1),
            m["gpu"] or f"{m['cpu']} ({m['cores']} cores)",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Not settled yet: " + "; ".join(f"{name} ({why})" for name, why in NOT_YET.items()) + ".",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rows",
        nargs="+",
        choices=list(ROW_NAMES),
        default=list(ROW_NAMES),
        help="rows to run (default: all)",
    )
    parser.add_argument("--folds", type=int, nargs="+", default=list(range(N_FOLDS)))
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0],
        help="model seeds (ridge rows are deterministic: seed 0 only)",
    )
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the folds")
    parser.add_argument("--max-epochs", type=int, help="override the configs' max_epochs")
    parser.add_argument("--max-minutes", type=float, help="wall-time limit of each training")
    parser.add_argument(
        "--slice",
        type=int,
        dest="slice_n",
        help="only the first N crystals of each collection (smoke)",
    )
    parser.add_argument(
        "--out",
        help=f"result files (default {OUT.relative_to(ROOT)}; with "
        "--slice, a folder in the work folder)",
    )
    parser.add_argument("--work", default=str(WORK), help="fold files, trainings and feature cache")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="neural folds trained at the same time, the cores divided among them",
    )
    parser.add_argument(
        "--card",
        metavar="ROW",
        choices=list(ROW_NAMES),
        help="only write row ROW's figures into the model card (the ready model's recipe: "
        "log_select_spearman) in --shipped, then stop",
    )
    parser.add_argument(
        "--shipped",
        default=str(ROOT / "aniso_nequip" / "pretrained"),
        help="folder of the model card (default: the package's)",
    )
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--concurrent", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not all(0 <= k < N_FOLDS for k in args.folds):
        parser.error(f"--folds must be in 0..{N_FOLDS - 1}")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    work = pathlib.Path(args.work).resolve()
    out = (
        pathlib.Path(args.out).resolve()
        if args.out
        else (work / f"slice{args.slice_n}" if args.slice_n else OUT)
    )
    os.environ.setdefault("WANDB_MODE", "offline")
    bench = Benchmark(work, args.split_seed, args.slice_n)
    sizes = np.bincount(bench.fold, minlength=N_FOLDS).tolist()
    print(
        f"{len(bench.frames)} crystals in {len(set(bench.groups))} chemical systems, folds of "
        f"{sizes}; {len(bench.ood)} phonondb crystals not in mp_subset",
        flush=True,
    )
    if args.card:
        summary = update_card(bench, args.card, pathlib.Path(args.shipped), out)
        mp = summary["mp"]
        print(
            f"model card in {args.shipped}: discovery row {args.card}, "
            + ", ".join(f"{key} {mp[key]['mean']:.3f}" for key in KEYS)
        )
        return
    rows = [ROW_NAMES[name] for name in args.rows]
    if any(row.ridge for row in rows):
        bench.features()  # once, before the ridge rows' wall times
    for k in args.folds:  # fold by fold, so that ridge rows share their kernels' decompositions
        for row in (r for r in rows if r.ridge):
            run_fold(bench, row, k, 0, out)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    neural = [r for r in rows if not r.ridge]
    if args.jobs > 1:
        run_concurrently(args, neural, out)
        neural = []
    for row in neural:
        for seed in args.seeds:
            for k in args.folds:
                run_fold(
                    bench,
                    row,
                    k,
                    seed,
                    out,
                    max_epochs=args.max_epochs,
                    max_minutes=args.max_minutes,
                    threads=args.threads,
                    concurrent=args.concurrent,
                )
    print(table(out), end="")


if __name__ == "__main__":
    if not __package__:  # run as `python benchmarks/discovery.py`: import from the repository
        sys.path.insert(0, str(ROOT))
    main()
