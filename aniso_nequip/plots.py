"""Parity plots (density heatmaps of predicted vs reference values, as the paper's Fig. 4a/5a)."""

import numpy as np


def parity_heatmap(reference, predicted, label: str, path, bins: int = 60) -> None:
    """Write a PNG heatmap of ``predicted`` against ``reference`` with the identity line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    reference, predicted = np.asarray(reference), np.asarray(predicted)
    lo = float(min(reference.min(), predicted.min()))
    hi = float(max(reference.max(), predicted.max()))
    pad = 0.02 * (hi - lo or 1.0)
    lims = (lo - pad, hi + pad)
    fig, ax = plt.subplots(figsize=(4.2, 3.8), dpi=150)
    *_, image = ax.hist2d(
        reference, predicted, bins=bins, range=[lims, lims], norm=LogNorm(), cmap="viridis", cmin=1
    )
    ax.plot(lims, lims, color="0.3", lw=0.8, ls="--")
    mae = np.abs(predicted - reference).mean()
    ax.set(xlim=lims, ylim=lims, xlabel=f"reference {label}", ylabel=f"predicted {label}")
    ax.set_title(f"{label}: MAE {mae:.3f} (n={len(reference)})", fontsize=9)
    fig.colorbar(image, ax=ax, label="crystals")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
