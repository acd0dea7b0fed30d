"""Error metrics of predicted dielectric tensors against references (nequip-evaluate's figures).

Definitions match the MetricsManager hooks used during training (``aniso_nequip.train``), so the
MAEs of ``nequip-train``'s test run and of ``nequip-evaluate`` agree for the same model and data.
"""

from typing import Dict, Sequence

import numpy as np
import torch

from . import tensors

MAE_KEYS = (
    "eps_poly_mae",
    "anisotropy_ratio_mae",
    "eigenvalue_mae",
    "component_mae",
    "frobenius_mae",
)


def derived(eps: np.ndarray) -> Dict[str, np.ndarray]:
    """``eps_poly`` (N,), ``a_r`` (N,), ascending ``eigenvalues`` (N, 3) of (N, 3, 3) tensors."""
    t = torch.as_tensor(eps, dtype=torch.float64)
    return {
        "eps_poly": tensors.polycrystalline(t).numpy(),
        "a_r": tensors.anisotropy_ratio(t).numpy(),  # NaN where undefined (lambda_min <= 0)
        "eigenvalues": tensors.eigenvalues(t).numpy(),
    }


def _maes(ref: np.ndarray, pred: np.ndarray) -> Dict[str, float]:
    r, p = derived(ref), derived(pred)
    err = np.abs(p["eps_poly"] - r["eps_poly"])
    ss_res = float(((p["eps_poly"] - r["eps_poly"]) ** 2).sum())
    ss_tot = float(((r["eps_poly"] - r["eps_poly"].mean()) ** 2).sum())
    return {
        "n": int(len(ref)),
        "eps_poly_mae": float(err.mean()),
        "eps_poly_rmse": float(np.sqrt((err**2).mean())),
        "eps_poly_r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
        "anisotropy_ratio_mae": float(np.nanmean(np.abs(p["a_r"] - r["a_r"]))),
        "eigenvalue_mae": float(np.abs(p["eigenvalues"] - r["eigenvalues"]).mean()),
        "component_mae": float(np.abs(pred - ref).mean()),
        "frobenius_mae": float(np.linalg.norm(pred - ref, axis=(1, 2)).mean()),
    }


def tensor_metrics(
    reference: np.ndarray, predicted: np.ndarray, crystal_systems: Sequence[str]
) -> Dict:
    """All metrics of ``predicted`` against ``reference`` (both ``(N, 3, 3)``, N >= 1), overall
    and per crystal system; ``cubic_anisotropy_ratio_mae`` is NaN when there is no cubic crystal."""
    reference, predicted = np.asarray(reference), np.asarray(predicted)
    systems = np.asarray(crystal_systems)
    out = _maes(reference, predicted)
    cubic = systems == "cubic"
    out["cubic_anisotropy_ratio_mae"] = (
        _maes(reference[cubic], predicted[cubic])["anisotropy_ratio_mae"]
        if cubic.any()
        else float("nan")
    )
    out["per_crystal_system"] = {
        system: _maes(reference[systems == system], predicted[systems == system])
        for system in sorted(set(systems.tolist()))
    }
    return out


def discovery_metrics(
    reference: np.ndarray, predicted: np.ndarray, top_fraction: float = 0.05, tail: float = 1.5
) -> Dict:
    """How well ``predicted`` (``(N, 3, 3)``) finds the most anisotropic crystals of
    ``reference``: ``spearman_a_r`` (rank correlation of ``a_r``), ``top_recall`` (the fraction
    of the ``top_fraction`` most anisotropic crystals, at least one, that are also in the
    predicted top of the same size), ``tail_a_r_mae`` (MAE of ``a_r`` over the ``n_tail``
    crystals with reference ``a_r >= tail``, NaN without any), with ``eps_poly_mae`` and
    ``anisotropy_ratio_mae`` of all crystals. A predicted tensor with an eigenvalue <= 0 (``a_r``
    undefined) ranks as the most anisotropic and is left out of the MAEs of ``a_r``."""
    from scipy.stats import spearmanr

    ref, pred = derived(reference), derived(predicted)
    ranked = np.where(np.isnan(pred["a_r"]), np.inf, pred["a_r"])
    k = max(1, int(round(top_fraction * len(ranked))))
    top = set(np.argsort(-ref["a_r"], kind="stable")[:k].tolist())
    found = set(np.argsort(-ranked, kind="stable")[:k].tolist())
    in_tail = ref["a_r"] >= tail
    errors = np.abs(pred["a_r"] - ref["a_r"])
    return {
        "n": int(len(ranked)),
        "spearman_a_r": float(spearmanr(ref["a_r"], ranked).statistic),
        "top_recall": len(top & found) / k,
        "tail_a_r_mae": float(np.nanmean(errors[in_tail])) if in_tail.any() else float("nan"),
        "n_tail": int(in_tail.sum()),
        "eps_poly_mae": float(np.abs(pred["eps_poly"] - ref["eps_poly"]).mean()),
        "anisotropy_ratio_mae": float(np.nanmean(errors)),
    }


def metrics_table(metrics: Dict) -> str:
    """A Markdown table: one row for all crystals, then one per crystal system."""
    columns = ("n",) + MAE_KEYS
    header = "| crystals | " + " | ".join(columns) + " |"
    lines = [header, "|" + " --- |" * (len(columns) + 1)]
    rows = [("all", metrics)] + list(metrics["per_crystal_system"].items())
    for name, m in rows:
        cells = [str(m["n"])] + [f"{m[k]:.4f}" for k in MAE_KEYS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"eps_poly RMSE {metrics['eps_poly_rmse']:.4f}, R^2 {metrics['eps_poly_r2']:.4f}; "
        f"cubic a_r MAE {metrics['cubic_anisotropy_ratio_mae']:.2e}"
    )
    return "\n".join(lines) + "\n"
