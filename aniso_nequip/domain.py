"""Applicability domain: how far a crystal lies from the crystals a model was trained on.

Every prediction gets a **domain score**: the distance of the crystal's pooled features to the
nearest training crystal, in units of the typical such distance of unseen crystals of the
training distribution (the median over the validation split), so ~0 for a training crystal,
about 1 for a typical test crystal and large for a crystal unlike any the model learned from.
Crystals above :data:`FLAG_THRESHOLD` are flagged ``out_of_domain`` (the threshold and how well
the score ranks the errors are measured by ``benchmarks/domain.py``, ``benchmarks/RESULTS.md``).

The features are those the dielectric head pools: the per-atom features entering the head's
per-atom readout (just before its mean pooling), reduced to rotation-invariant numbers (the
``0e`` channels and the norm of every other channel) and averaged over the crystal's atoms, so
the score is invariant under rotations, translations, atom permutations and supercells. They are
read with a forward hook on that module (:func:`capture_features`), which changes no output and
works on checkpoints and nequip packages alike; compiled ``.nequip.pt2`` models expose no
modules, so they get no score (:attr:`DomainScores.reason` says so). Each feature is
standardised by its spread over the training crystals before the Euclidean distance is taken.

A :class:`DomainReference` holds the training crystals' features, ids, formulas and structures
(to say whether the nearest one is the same structure: pymatgen's ``StructureMatcher``) and the
calibration. The ready model ships one (``aniso_nequip/pretrained/domain_reference.npz``,
written by ``release/ship_model.py``); for another model build one from its training file
(:func:`build_reference`, or ``--domain-reference train.extxyz`` on the commands).

    from aniso_nequip.domain import build_reference
    reference = build_reference("best.ckpt", "train.extxyz", "val.extxyz")
    reference.save("domain_reference.npz")
    eps, domain = aniso_nequip.predict(structures, "best.ckpt", domain="domain_reference.npz")
"""

import contextlib
import dataclasses
import json
import os
import pathlib
from typing import Dict, List, Optional, Sequence, Union

import ase
import numpy as np
import torch
from nequip.data import AtomicDataDict

from ._keys import DIELECTRIC_IRREPS_KEY
from .errors import InputError

FLAG_THRESHOLD = 1.5
"""Domain score above which a prediction is flagged ``out_of_domain``, chosen by
``benchmarks/domain.py``: the smallest score (grid of 0.25 from 1) that flags at most a third of
the MP test split and above which the ready model's mean absolute errors of eps_poly and a_r are
at least twice those below it, on the MP test split and on phonondb."""

COLUMNS = (
    "domain_score",
    "out_of_domain",
    "nearest_training_id",
    "nearest_training_formula",
    "nearest_training_same_structure",
)
"""The per-crystal columns every prediction table carries (:meth:`DomainScores.row`)."""

REFERENCE_SUFFIX = ".npz"
REFERENCE_HELP = (
    "the model's training crystals for the domain score: a reference saved as .npz "
    "(aniso_nequip.domain.build_reference) or the training structure file itself (its features "
    "are computed now); default: the ready model's shipped reference, none for other models "
    "(scores then unavailable)"
)
_MIN_STD = 1e-6  # features (nearly) constant over the training crystals are not scaled up


class DomainError(InputError):
    """A domain reference that cannot be read or does not fit the model."""


def _pooled_readout(model) -> Optional[torch.nn.Module]:
    """The module whose input the dielectric head mean-pools (the per-atom readout before the
    ``GraphMeanPool`` writing ``dielectric_tensor_irreps``); ``None`` for a model without one
    (compiled). An ensemble's features are those of its first member."""
    if hasattr(model, "members"):
        return _pooled_readout(model.members[0])
    for module in getattr(model, "modules", lambda: ())():
        previous = None
        for child in module.children():
            if getattr(child, "out_field", None) == DIELECTRIC_IRREPS_KEY and previous is not None:
                return previous
            previous = child
    return None


def _invariants(x: torch.Tensor, irreps) -> torch.Tensor:
    """Rotation-invariant per-atom numbers of features ``x`` with ``irreps``: the ``0e``
    channels as they are, the norm of each channel of every other irrep."""
    from e3nn.o3 import Irreps

    parts, start = [], 0
    for mul, ir in Irreps(str(irreps)):
        block = x[:, start : start + mul * ir.dim].reshape(len(x), mul, ir.dim)
        start += mul * ir.dim
        parts.append(block[..., 0] if (ir.l, ir.p) == (0, 1) else block.norm(dim=-1))
    return torch.cat(parts, dim=1)


@contextlib.contextmanager
def capture_features(model):
    """Within the block, every forward pass of ``model`` appends its structures' pooled invariant
    features (``(num_frames, D)`` float64 arrays) to the yielded list; ``None`` is yielded (and
    nothing captured) for a model whose modules cannot be reached (compiled)."""
    module = _pooled_readout(model)
    if module is None:
        yield None
        return
    field, captured = module.field, []
    irreps = module.irreps_in[field]

    def hook(_, args):
        data = args[0]
        x = _invariants(data[field].detach(), irreps).to(torch.float64)
        if AtomicDataDict.BATCH_KEY in data:
            n = AtomicDataDict.num_frames(data)
            summed = torch.zeros(n, x.shape[1], dtype=x.dtype, device=x.device)
            summed.index_add_(0, data[AtomicDataDict.BATCH_KEY], x)
            pooled = summed / data[AtomicDataDict.NUM_NODES_KEY].reshape(-1, 1).to(x.dtype)
        else:
            pooled = x.mean(dim=0, keepdim=True)
        captured.append(pooled.cpu().numpy())

    handle = module.register_forward_pre_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


@dataclasses.dataclass
class DomainScores:
    """The applicability domain of ``N`` predictions.

    Args:
        score: ``(N,)`` nearest-training-crystal distance / median validation distance (NaN when
            unavailable)
        nearest_id, nearest_formula: the nearest training crystal of each
        same_structure: whether it is the same structure (``StructureMatcher``)
        threshold: the score above which a prediction is flagged
        reason: why there are no scores (``None`` when there are)
    """

    score: np.ndarray
    nearest_id: List[str]
    nearest_formula: List[str]
    same_structure: List[bool]
    threshold: float = FLAG_THRESHOLD
    reason: Optional[str] = None

    @classmethod
    def unavailable(cls, n: int, reason: str) -> "DomainScores":
        return cls(np.full(n, np.nan), [""] * n, [""] * n, [False] * n, reason=reason)

    @property
    def available(self) -> bool:
        return self.reason is None

    @property
    def flagged(self) -> np.ndarray:
        """``(N,)`` bool: the score exceeds the threshold (never for an unavailable score)."""
        return np.nan_to_num(self.score, nan=-np.inf) > self.threshold

    def __len__(self) -> int:
        return len(self.score)

    def take(self, indices: Sequence[int]) -> "DomainScores":
        """The scores of the crystals ``indices``, in that order."""
        indices = list(indices)
        return dataclasses.replace(
            self,
            score=self.score[indices],
            nearest_id=[self.nearest_id[i] for i in indices],
            nearest_formula=[self.nearest_formula[i] for i in indices],
            same_structure=[self.same_structure[i] for i in indices],
        )

    def values(self, i: int) -> Dict[str, object]:
        """Crystal ``i``'s values of :data:`COLUMNS` (a NaN score, ``False`` flags and empty
        names when unavailable)."""
        values = (
            float(self.score[i]),
            bool(self.flagged[i]),
            self.nearest_id[i],
            self.nearest_formula[i],
            bool(self.same_structure[i]),
        )
        return dict(zip(COLUMNS, values))

    def row(self, i: int) -> Dict[str, object]:
        """:meth:`values` for a table row: the score to 4 decimals, all ``None`` (empty cells)
        when unavailable."""
        if not self.available:
            return dict.fromkeys(COLUMNS)
        return {**self.values(i), "domain_score": round(float(self.score[i]), 4)}

    def text(self, i: int) -> str:
        """One line on crystal ``i`` for a report (its scores must be available)."""
        same = ", same structure" if self.same_structure[i] else ""
        flag = "  OUT OF DOMAIN" if self.flagged[i] else ""
        return (
            f"domain score {self.score[i]:.2f} (flag above {self.threshold:g}; nearest training "
            f"crystal {self.nearest_id[i]} {self.nearest_formula[i]}{same}){flag}"
        )

    def summary(self) -> Dict[str, object]:
        """For JSON reports: the threshold and the number flagged (or why there are no scores)."""
        if not self.available:
            return {"available": False, "reason": self.reason}
        return {
            "available": True,
            "threshold": self.threshold,
            "n_out_of_domain": int(self.flagged.sum()),
        }


def _formula(atoms: ase.Atoms) -> str:
    from pymatgen.core import Composition

    return Composition(atoms.get_chemical_formula()).reduced_formula


@dataclasses.dataclass
class DomainReference:
    """The training crystals of a model as the domain score sees them.

    Args:
        features: ``(N, D)`` pooled invariant features of the training crystals
        ids, formulas: their ids and reduced formulas
        structures: the crystals themselves (for ``same_structure``)
        scale: the median nearest-training distance of the calibration crystals
        calibration: what ``scale`` was measured on (for the record)
        threshold: the flag threshold
    """

    features: np.ndarray
    ids: List[str]
    formulas: List[str]
    structures: List[ase.Atoms]
    scale: float
    calibration: str
    threshold: float = FLAG_THRESHOLD

    def __post_init__(self):
        self.features = np.asarray(self.features, dtype=np.float64)
        self._center = self.features.mean(axis=0)
        std = self.features.std(axis=0)
        self._std = np.maximum(std, _MIN_STD * max(float(std.max(initial=0.0)), 1.0))
        self._standard = self._standardised(self.features)

    def _standardised(self, features: np.ndarray) -> np.ndarray:
        return (np.asarray(features, dtype=np.float64) - self._center) / self._std

    def nearest(self, features: np.ndarray, exclude_self: bool = False):
        """``(index, distance)`` of the nearest training crystal of each row of ``features``
        (standardised Euclidean distance); ``exclude_self``: ``features`` are the training
        crystals' own, each matched to its nearest *other* crystal."""
        features = np.asarray(features, dtype=np.float64)
        if features.shape[1] != self._standard.shape[1]:
            raise DomainError(
                f"the domain reference has {self._standard.shape[1]} features per crystal but "
                f"the model gives {features.shape[1]}: it was built for another model"
            )
        z = self._standardised(features)
        index, distance = [], []
        for start in range(0, len(z), 256):
            block = z[start : start + 256]
            d2 = (block**2).sum(1)[:, None] - 2 * block @ self._standard.T
            d2 += (self._standard**2).sum(1)[None, :]
            if exclude_self:
                d2[np.arange(len(block)), np.arange(start, start + len(block))] = np.inf
            best = d2.argmin(axis=1)
            index.append(best)
            distance.append(np.sqrt(np.maximum(d2[np.arange(len(block)), best], 0.0)))
        return np.concatenate(index), np.concatenate(distance)

    def scores(self, features: np.ndarray, structures: Sequence[ase.Atoms]) -> DomainScores:
        """:class:`DomainScores` of ``structures`` with pooled ``features`` ``(N, D)``."""
        from pymatgen.analysis.structure_matcher import StructureMatcher
        from pymatgen.io.ase import AseAtomsAdaptor

        if len(structures) == 0:
            return DomainScores(np.zeros(0), [], [], [], self.threshold)
        structures = [
            s if isinstance(s, ase.Atoms) else AseAtomsAdaptor.get_atoms(s) for s in structures
        ]
        index, distance = self.nearest(features)
        matcher, same = StructureMatcher(), []
        for atoms, i in zip(structures, index):
            if _formula(atoms) != self.formulas[i]:
                same.append(False)
                continue
            query = AseAtomsAdaptor.get_structure(atoms)
            same.append(bool(matcher.fit(query, AseAtomsAdaptor.get_structure(self.structures[i]))))
        return DomainScores(
            distance / self.scale,
            [self.ids[i] for i in index],
            [self.formulas[i] for i in index],
            same,
            self.threshold,
        )

    def save(self, path) -> None:
        """Write the reference as one ``.npz`` file (no pickles)."""
        counts = np.array([len(a) for a in self.structures])
        meta = {"scale": self.scale, "calibration": self.calibration, "threshold": self.threshold}
        with open(path, "wb") as f:
            np.savez_compressed(
                f,
                features=self.features.astype(np.float32),
                ids=np.array(self.ids, dtype=str),
                formulas=np.array(self.formulas, dtype=str),
                counts=counts,
                numbers=np.concatenate([a.numbers for a in self.structures]),
                positions=np.concatenate([a.positions for a in self.structures]),
                cells=np.stack([a.cell.array for a in self.structures]),
                meta=np.array(json.dumps(meta)),
            )

    @classmethod
    def load(cls, path) -> "DomainReference":
        """Read a reference written by :meth:`save`."""
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
            meta = json.loads(str(arrays["meta"]))
            bounds = np.concatenate([[0], np.cumsum(arrays["counts"])])
            structures = [
                ase.Atoms(
                    numbers=arrays["numbers"][a:b],
                    positions=arrays["positions"][a:b],
                    cell=cell,
                    pbc=True,
                )
                for a, b, cell in zip(bounds[:-1], bounds[1:], arrays["cells"])
            ]
        except Exception as err:  # numpy/zip/json errors of a file that is not a reference
            raise DomainError(
                f"`{path}` is not a domain reference ({type(err).__name__}: {err})"
            ) from err
        return cls(
            arrays["features"],
            [str(i) for i in arrays["ids"]],
            [str(x) for x in arrays["formulas"]],
            structures,
            float(meta["scale"]),
            meta["calibration"],
            float(meta["threshold"]),
        )


def pooled_features(structures: Sequence, model, batch_size: int = 32, device="cpu") -> np.ndarray:
    """``(N, D)`` pooled invariant features of ``structures`` under ``model`` (a model or path);
    raises :class:`DomainError` for a model that exposes none (compiled)."""
    from .inference import as_model, predict

    model = as_model(model, device)
    with capture_features(model) as features:
        predict(structures, model, batch_size, device)
    if features is None:
        raise DomainError("a compiled model exposes no features: use its checkpoint or package")
    return np.concatenate(features)


def _crystal_ids(frames: Sequence[ase.Atoms], start: int = 0) -> List[str]:
    from .data.matching import NAME_KEYS, crystal_id

    return [crystal_id(a, NAME_KEYS) or f"frame {start + i}" for i, a in enumerate(frames)]


def _read(path) -> List[ase.Atoms]:
    from .data.files import read_frames

    if not os.path.isfile(path):
        raise DomainError(f"domain reference file `{path}` does not exist")
    try:
        frames = list(read_frames(path))
    except Exception as err:  # ASE/h5py errors of a malformed file
        raise DomainError(f"domain reference file `{path}`: cannot be read ({err})") from err
    if not frames:
        raise DomainError(f"domain reference file `{path}` contains no structure")
    return frames


def build_reference(
    model,
    train: Union[str, os.PathLike, Sequence[ase.Atoms]],
    calibration: Union[None, str, os.PathLike, Sequence[ase.Atoms]] = None,
    batch_size: int = 32,
    device="cpu",
) -> DomainReference:
    """The :class:`DomainReference` of ``model`` (a model or its path) trained on ``train`` (a
    structure file or a list of ``ase.Atoms``), calibrated on ``calibration`` (the validation
    split: the median distance of its crystals to their nearest training crystal); without
    ``calibration``, on the training crystals themselves (each one's distance to its nearest
    *other* training crystal, leave-one-out)."""
    from .inference import as_model

    frames = _read(train) if isinstance(train, (str, os.PathLike)) else list(train)
    model = as_model(model, device)
    features = pooled_features(frames, model, batch_size, device)
    reference = DomainReference(
        features,
        _crystal_ids(frames),
        [_formula(a) for a in frames],
        [ase.Atoms(a.numbers, a.positions, cell=a.cell, pbc=True) for a in frames],
        1.0,
        "",
    )
    if calibration is None:
        _, distance = reference.nearest(features, exclude_self=True)
        reference.calibration = f"leave-one-out over {len(frames)} training crystals"
    else:
        held_out = (
            _read(calibration) if isinstance(calibration, (str, os.PathLike)) else calibration
        )
        _, distance = reference.nearest(pooled_features(held_out, model, batch_size, device))
        reference.calibration = f"{len(held_out)} validation crystals"
    reference.scale = float(max(np.median(distance), 1e-12))
    return reference


@dataclasses.dataclass
class NoReference:
    """There is no domain reference for a model, and why (scores are then unavailable)."""

    reason: str


def shipped_reference_path() -> pathlib.Path:
    """The domain reference of the ready model (:mod:`aniso_nequip.pretrained`)."""
    from .pretrained import HERE

    return HERE / "domain_reference.npz"


def _is_shipped(model) -> bool:
    """Whether ``model`` (``None``, a path or a list of paths) is the shipped ready model (a
    loaded model cannot be told apart: ``False``)."""
    from .pretrained import model_paths

    if model is None:
        return True
    first = model[0] if isinstance(model, (list, tuple)) and model else model
    if not isinstance(first, (str, os.PathLike)):
        return False
    return os.path.abspath(first) in {os.path.abspath(p) for p in model_paths()}


def resolve_reference(model, reference=None, batch_size: int = 32, device="cpu"):
    """The reference for ``model`` (as given to :func:`~aniso_nequip.inference.predict`: ``None``
    for the ready model, a path, a loaded model or a list): ``reference`` itself (a
    :class:`DomainReference`), read from a ``.npz`` file, or built from a training-structure file
    or a list of training ``ase.Atoms`` (:func:`build_reference`, leave-one-out calibration); by
    default (``None`` or ``True``) the
    ready model's shipped reference when ``model`` is the ready model, else a
    :class:`NoReference`."""
    if isinstance(reference, (DomainReference, NoReference)):
        return reference
    if reference is None or reference is True:
        if _is_shipped(model):
            path = shipped_reference_path()
            if path.is_file():
                return DomainReference.load(path)
            return NoReference(
                "the ready model's domain reference is missing: rerun release/ship_model.py"
            )
        return NoReference(
            "no domain reference for this model: pass one built from its training "
            "file (--domain-reference train.extxyz)"
        )
    if isinstance(reference, (str, os.PathLike)) and os.fspath(reference).endswith(
        REFERENCE_SUFFIX
    ):
        if not os.path.isfile(reference):
            raise DomainError(f"domain reference file `{reference}` does not exist")
        return DomainReference.load(reference)
    first = model[0] if isinstance(model, (list, tuple)) else model
    return build_reference(first, reference, batch_size=batch_size, device=device)


def scores_for(reference, features: Optional[List[np.ndarray]], structures) -> DomainScores:
    """:class:`DomainScores` from a :func:`resolve_reference` result and the features
    :func:`capture_features` captured (``None``: the model exposes none)."""
    if isinstance(reference, NoReference):
        return DomainScores.unavailable(len(structures), reference.reason)
    if features is None:
        return DomainScores.unavailable(
            len(structures), "a compiled model exposes no features: use its checkpoint or package"
        )
    pooled = np.concatenate(features) if features else np.zeros((0, reference.features.shape[1]))
    return reference.scores(pooled, structures)


def domain_metrics(scores: DomainScores, errors: Dict[str, np.ndarray], ids: Sequence[str]) -> Dict:
    """:meth:`DomainScores.summary` with the flagged crystals named by ``ids`` and, for each
    ``errors`` entry (absolute errors of the crystals with a reference, NaN for the others), the
    Spearman rank correlation of the score with it (``spearman_<name>``) and the mean error of
    the crystals in and out of the domain (``<name>_mae_in`` / ``<name>_mae_out``)."""
    from scipy.stats import spearmanr

    out = scores.summary()
    if not scores.available:
        return out
    out["out_of_domain"] = [ids[i] for i in np.flatnonzero(scores.flagged)]
    for name, error in errors.items():
        known = np.isfinite(error)
        if known.sum() >= 3:
            out[f"spearman_{name}"] = float(spearmanr(scores.score[known], error[known])[0])
        for side, mask in (("in", ~scores.flagged), ("out", scores.flagged)):
            if (mask & known).any():
                out[f"{name}_mae_{side}"] = float(error[mask & known].mean())
    return out


def metrics_note(metrics: Dict) -> str:
    """A line on :func:`domain_metrics` for a report."""
    if not metrics["available"]:
        return f"domain scores unavailable: {metrics['reason']}\n"
    text = (
        f"{metrics['n_out_of_domain']} prediction(s) out of the applicability domain "
        f"(domain score > {metrics['threshold']:g})"
    )
    rho = [f"{k[9:]} {v:.2f}" for k, v in metrics.items() if k.startswith("spearman_")]
    if rho:
        text += f"; Spearman of the score vs the absolute error: {', '.join(rho)}"
    return text + ".\n"


class OutOfDomainTally:
    """For a screening summary, gathered as the ranking's CSV rows stream by in rank order
    (:meth:`add`): how many are out of the domain (they rank after the others), the first
    ``listed`` of them, and whether scores were available at all (:meth:`summary`)."""

    def __init__(self, listed: int):
        self.max_listed = listed
        self.available = False
        self.count = 0
        self.listed: List[Dict[str, str]] = []

    def add(self, row: Dict[str, str]) -> None:
        self.available = self.available or row["domain_score"] not in ("", None)
        if row["out_of_domain"] == "True":
            self.count += 1
            if len(self.listed) < self.max_listed:
                keys = ("rank", "id", "formula", "domain_score", "nearest_training_id")
                self.listed.append({k: row[k] for k in keys})

    def summary(self) -> Dict:
        return {
            "available": self.available,
            "count": self.count,
            "threshold": FLAG_THRESHOLD,
            "listed": self.listed,
        }


def domain_lines(summary: Dict, listed: int) -> List[str]:
    """Markdown lines on :meth:`OutOfDomainTally.summary` for ``summary.md``."""
    lines = ["", "## Applicability domain", ""]
    if not summary["available"]:
        return lines + [
            "Domain scores unavailable: no domain reference for these models "
            "(`--domain-reference train.extxyz`)."
        ]
    lines.append(
        f"{summary['count']} crystal(s) lie outside the models' applicability domain (domain "
        f"score > {summary['threshold']:g}: farther from every training crystal than "
        f"{summary['threshold']:g}x the median validation crystal; `out_of_domain` in "
        "`ranking.csv`). Their predictions are least reliable, so they rank after every crystal "
        "in the domain."
    )
    if summary["count"]:
        lines.append("")
    lines += [
        f"- #{c['rank']} {c['id']} ({c['formula']}): domain score {float(c['domain_score']):.2f}, "
        f"nearest training crystal {c['nearest_training_id']}"
        for c in summary["listed"][:listed]
    ]
    if summary["count"] > len(summary["listed"]):
        lines.append("- ... (see ranking.csv)")
    return lines
