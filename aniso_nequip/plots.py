"""Every plot the package writes (PNG files): parity plots (``nequip-evaluate``), dataset
histograms (``aniso-nequip data stats``), the screening plots of the paper's Fig. 6
(``aniso-nequip screen``) and optuna's sweep plots (``aniso-nequip sweep``).

Figures are drawn with matplotlib's non-interactive ``Agg`` backend, selected here and nowhere
else (:func:`pyplot`).
"""

import pathlib
import warnings
from typing import Dict, Optional, Sequence

import numpy as np

from .io import atomic_file

# up to this many points a parity plot is a scatter coloured by crystal system, above it a density
MAX_SCATTER = 2000
CRYSTAL_SYSTEMS = (
    "triclinic",
    "monoclinic",
    "orthorhombic",
    "tetragonal",
    "trigonal",
    "hexagonal",
    "cubic",
)
# what the quantities of the parity plots are (all dimensionless); ``{method}`` names the method
# of the reference tensors, e.g. "PBE, DFPT"
QUANTITIES = {
    "eps_poly": "eps_poly = tr(eps_inf) / 3\n({method}; dimensionless)",
    "a_r": "a_r = eps_max / eps_min of eps_inf\n({method}; dimensionless; log axis)",
    "n": "principal refractive index n = sqrt(eps_inf)\n({method}; dimensionless)",
}
LOG_TICKS = (1, 1.1, 1.2, 1.5, 2, 3, 5, 10, 20, 50, 100)


def pyplot():
    """``matplotlib.pyplot`` on the ``Agg`` backend (files only, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def parity_figure(
    reference,
    predicted,
    label: str,
    systems: Optional[Sequence[str]] = None,
    max_scatter: int = MAX_SCATTER,
    method: Optional[str] = None,
    log: Optional[bool] = None,
):
    """A parity plot of ``predicted`` against ``reference`` with the identity line and the MAE.

    Up to ``max_scatter`` points it is a scatter plot, one colour per crystal system of
    ``systems`` (one per point; ``None``: one colour); above, a 2-D histogram with a logarithmic
    colour bar (the paper's Fig. 4a/5a), where single points would hide each other. The axes
    say what ``label`` is (:data:`QUANTITIES`, with ``method``, e.g. ``"PBE, DFPT"``, the
    method of the reference values); ``log`` (default: for ``a_r``) draws logarithmic axes, so
    that a few very anisotropic crystals do not squeeze the others into a corner.

    Returns:
        the matplotlib ``Figure`` (close it with ``pyplot().close(fig)``)
    """
    plt = pyplot()
    reference, predicted = np.asarray(reference), np.asarray(predicted)
    log = label == "a_r" if log is None else log
    lo = float(min(reference.min(), predicted.min()))
    hi = float(max(reference.max(), predicted.max()))
    if log:
        pad = (hi / lo) ** 0.03 if hi > lo else 1.05
        lims = (lo / pad, hi * pad)
        bins = np.geomspace(*lims, 61)
    else:
        pad = 0.02 * (hi - lo or 1.0)
        lims = (lo - pad, hi + pad)
        bins = np.linspace(*lims, 61)
    fig, ax = plt.subplots(figsize=(4.6, 4.2), dpi=150)
    if len(reference) > max_scatter:
        from matplotlib.colors import LogNorm

        *_, image = ax.hist2d(
            reference,
            predicted,
            bins=[bins, bins],
            range=[lims, lims],
            norm=LogNorm(),
            cmap="viridis",
            cmin=1,
        )
        fig.colorbar(image, ax=ax, label="crystals")
    else:
        labels = np.asarray(["all"] * len(reference) if systems is None else systems)
        present = set(labels.tolist())
        names = [s for s in CRYSTAL_SYSTEMS if s in present] + sorted(present - {*CRYSTAL_SYSTEMS})
        for i, name in enumerate(names):
            mask = labels == name
            ax.scatter(
                reference[mask],
                predicted[mask],
                s=10,
                alpha=0.8,
                lw=0,
                color=f"C{i}",
                label=f"{name} ({int(mask.sum())})",
            )
        if systems is not None:
            ax.legend(fontsize=6, title="crystal system", title_fontsize=6, loc="upper left")
    ax.plot(lims, lims, color="0.3", lw=0.8, ls="--")
    mae = np.abs(predicted - reference).mean()
    quantity = QUANTITIES.get(label, label).format(method=method or "reference method unknown")
    ax.set(xlim=lims, ylim=lims)
    ax.set_xlabel(f"reference {quantity}", fontsize=8)
    ax.set_ylabel(f"predicted {quantity}", fontsize=8)
    if log:
        _log_axes(ax, lims)
    ax.set_title(f"{label}: MAE {mae:.3f} (n={len(reference)})", fontsize=9)
    fig.tight_layout()
    return fig


def _log_axes(ax, lims) -> None:
    """Logarithmic axes with plain-number ticks: those of :data:`LOG_TICKS` within ``lims``
    at least 7% of the axis apart."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    gap = 0.07 * np.log(lims[1] / lims[0])
    ticks = []
    for tick in (t for t in LOG_TICKS if lims[0] <= t <= lims[1]):
        if not ticks or np.log(tick / ticks[-1]) >= gap:
            ticks.append(tick)
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(FixedLocator(ticks))
        axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axis.set_minor_locator(NullLocator())
        axis.set_minor_formatter(NullFormatter())


def parity_plot(
    reference,
    predicted,
    label: str,
    path,
    systems: Optional[Sequence[str]] = None,
    max_scatter: int = MAX_SCATTER,
    method: Optional[str] = None,
) -> str:
    """Write :func:`parity_figure` to the PNG file ``path``; returns its kind, ``"scatter"`` or
    ``"density"``."""
    fig = parity_figure(reference, predicted, label, systems, max_scatter, method)
    try:
        fig.savefig(path)
    finally:
        pyplot().close(fig)
    return "density" if len(reference) > max_scatter else "scatter"


def stats_histograms(eps_poly, a_r, path, title: str) -> None:
    """Histograms of ``eps_poly`` and (log counts) ``a_r`` side by side, written to ``path``."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), dpi=150)
    axes[0].hist(eps_poly, bins=40, color="tab:blue")
    axes[0].set(xlabel="polycrystalline eps_inf (mean eigenvalue)", ylabel="crystals")
    axes[1].hist(a_r, bins=40, color="tab:orange", log=True)
    axes[1].set(xlabel="anisotropy ratio a_r", ylabel="crystals (log)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    try:
        with atomic_file(path, force=True) as tmp:
            fig.savefig(tmp)
    finally:
        plt.close(fig)


def a_r_by_dimensionality(
    groups: Dict[str, Sequence[float]], score: str, path, n_unphysical: int = 0
) -> None:
    """Box plot with jittered points of ``score`` (an ``a_r`` column) per structural
    dimensionality (``groups``: label -> values; non-finite values are left out), written to
    ``path``; the title notes ``n_unphysical`` predictions left out."""
    plt = pyplot()
    names = sorted(groups)
    fig, ax = plt.subplots(figsize=(4.5, 3.6), dpi=150)
    values = [np.asarray(groups[n])[np.isfinite(groups[n])] for n in names]
    ax.boxplot(values, showfliers=False)
    ax.set_xticks(range(1, len(names) + 1), names)
    rng = np.random.default_rng(0)
    for i, v in enumerate(values, start=1):
        ax.scatter(i + rng.uniform(-0.15, 0.15, len(v)), v, s=6, alpha=0.5, color="tab:blue")
    ax.set(xlabel="structural dimensionality", ylabel=score)
    title = ", ".join(f"{n}: {len(v)}" for n, v in zip(names, values))
    if n_unphysical:
        title += f"; {n_unphysical} unphysical predictions left out"
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def a_r_histogram(a_r, training, score: str, path, n_unphysical: int = 0) -> None:
    """Density histograms (log) of the screened crystals' ``a_r`` and, unless ``training`` is
    ``None``, of the training set's, written to ``path``."""
    plt = pyplot()
    a_r = a_r[np.isfinite(a_r)]
    screened = f"screened ({len(a_r)})"
    if n_unphysical:
        screened = f"screened ({len(a_r)}; {n_unphysical} unphysical predictions left out)"
    sets = [(a_r, screened)]
    if training is not None:
        sets.append((training[np.isfinite(training)], f"training set ({len(training)})"))
    hi = max(float(v.max()) for v, _ in sets if len(v))
    bins = np.linspace(1.0, max(hi, 1.0 + 1e-3), 40)
    fig, ax = plt.subplots(figsize=(4.8, 3.4), dpi=150)
    for values, name in sets:
        ax.hist(values, bins=bins, density=True, alpha=0.55, label=name, log=True)
    ax.set(xlabel=f"anisotropy ratio ({score})", ylabel="density (log)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def sweep_plots(study, out: pathlib.Path) -> Dict[str, pathlib.Path]:
    """optuna's optimisation history and parameter importances of ``study`` as ``history.png``
    and ``importance.png`` in ``out``; returns the paths written (a plot optuna cannot draw yet,
    e.g. importances of a single trial, is skipped with a message)."""
    plt = pyplot()
    from optuna.visualization import matplotlib as ovm

    made = {}
    for name, plot in (
        ("history", ovm.plot_optimization_history),
        ("importance", ovm.plot_param_importances),
    ):
        path = out / f"{name}.png"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = plot(study)
            with atomic_file(path, force=True) as tmp:
                ax.figure.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
            made[name] = path
        except (ValueError, RuntimeError, ZeroDivisionError) as err:
            print(f"no {name} plot: {err}")
        finally:
            plt.close("all")
    return made
