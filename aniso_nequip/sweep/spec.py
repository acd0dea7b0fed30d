"""Sweep specifications (YAML), validated before any training starts.

.. code-block:: yaml

    study_name: anisonet_bo
    base_config: configs/anisonet.yaml     # any nequip-train config of this project
    overrides: [max_epochs=60]             # fixed for every trial
    metric: val0_epoch/eps_poly_mae        # metrics.csv column, taken at the best epoch
    direction: minimize
    sampler: {name: tpe, seed: 0}          # tpe | random | grid
    n_trials: 50                           # grid: defaults to the grid size
    pruner: {name: median, n_startup_trials: 5, n_warmup_steps: 10}   # threshold, or null
    storage: null                          # default sqlite:///sweeps/<study_name>/study.db
    parameters:                            # top-level variables of the base config
      lr: {type: float, low: 1.0e-4, high: 0.5, log: true}
      l_max: {type: int, low: 1, high: 4}
      num_features: {choices: [16, 32, 48]}
"""

import dataclasses
import math
import pathlib
from typing import Any, Dict, List, Optional, Sequence

import yaml

from ..errors import InputError, not_a_file
from ..variables import RULES, Rule, check_config, check_variable, num_layers_rule
from .pruners import PRUNERS

SAMPLERS = ("tpe", "random", "grid")
_KEYS = {
    "study_name",
    "base_config",
    "overrides",
    "metric",
    "direction",
    "sampler",
    "n_trials",
    "pruner",
    "storage",
    "output_dir",
    "parameters",
}


class SpecError(InputError):
    """The sweep specification is invalid."""


@dataclasses.dataclass
class SweepSpec:
    path: pathlib.Path
    study_name: str
    base_config: pathlib.Path
    metric: str
    direction: str
    sampler: Dict[str, Any]
    parameters: Dict[str, Dict[str, Any]]
    n_trials: int
    pruner: Optional[Dict[str, Any]]
    storage: str
    output_dir: pathlib.Path
    overrides: List[str]

    @property
    def grid(self) -> Dict[str, list]:
        return {name: list(p["choices"]) for name, p in self.parameters.items()}


def _check_value(name: str, value, where: str, rule: Optional[Rule] = None) -> None:
    """:func:`~aniso_nequip.variables.check_variable` (``rule``, default the variable's own
    rule, if it has one) as a :class:`SpecError` naming the spec."""
    rule = rule or RULES.get(name)
    if rule is None:
        return
    try:
        check_variable(name, value, rule)
    except InputError as err:
        raise SpecError(f"{where}: {err}") from None


def _check_parameter(name: str, p: Any, where: str, rule: Optional[Rule]) -> Dict[str, Any]:
    """``p`` as the sweep's parameter ``name``; its choices or bounds must obey ``rule``."""
    if not isinstance(p, dict):
        raise SpecError(f"{where}: parameter `{name}` must be a mapping")
    if "choices" in p:
        if not isinstance(p["choices"], list) or not p["choices"]:
            raise SpecError(f"{where}: parameter `{name}` has an empty `choices` list")
        for choice in p["choices"]:
            _check_value(name, choice, f"{where}: parameter `{name}`, choice {choice!r}", rule)
        return {"type": "categorical", "choices": p["choices"]}
    kind = p.get("type")
    if kind not in ("float", "int"):
        raise SpecError(f"{where}: parameter `{name}` needs `choices` or `type: float|int`")
    try:
        low, high = float(p["low"]), float(p["high"])
    except (KeyError, TypeError, ValueError):
        raise SpecError(f"{where}: parameter `{name}` needs numeric `low` and `high`") from None
    if not low < high:
        raise SpecError(f"{where}: parameter `{name}` has an empty range [{low}, {high}]")
    log = bool(p.get("log", False))
    if log and low <= 0:
        raise SpecError(f"{where}: parameter `{name}` is log-scaled, so `low` must be > 0")
    if kind == "int" and (low != math.floor(low) or high != math.floor(high)):
        raise SpecError(f"{where}: int parameter `{name}` needs integer bounds")
    for bound, value in (("low", low), ("high", high)):
        value = int(value) if kind == "int" else value
        _check_value(name, value, f"{where}: parameter `{name}`, `{bound}`", rule)
    return {"type": kind, "low": low, "high": high, "log": log}


def compose_config(config: pathlib.Path, overrides: Optional[List[str]] = None):
    """A nequip-train config composed with ``overrides`` (interpolations kept)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(config.parent.resolve()), version_base=None):
        return compose(config_name=config.stem, overrides=list(overrides or []))


def logged_metrics(config) -> List[str]:
    """The metrics a run of ``config`` logs at each validation epoch, i.e. what a sweep's
    ``metric`` may be: ``val0_epoch/NAME`` for each entry of its ``val_metrics`` and their
    ``weighted_sum``."""
    from hydra.utils import instantiate

    manager = instantiate(config.training_module.val_metrics)
    names = list(manager.entries) + (["weighted_sum"] if manager.do_weighted_sum else [])
    return [f"val0_epoch/{name}" for name in names]


def check_trial_config(spec: "SweepSpec", overrides: Sequence[str] = ()) -> None:
    """Check, before any trial, the base config with the spec's and the command line's
    ``overrides``: its fixed variables (:func:`aniso_nequip.variables.check_config`) and that
    the spec's ``metric`` is one it logs (:func:`logged_metrics`); raises
    :class:`~aniso_nequip.errors.InputError` (:class:`SpecError` for the metric)."""
    try:
        config = compose_config(spec.base_config, spec.overrides + list(overrides))
    except Exception as err:  # Hydra's errors for an override it cannot apply
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SpecError(
            f"{spec.path}: the overrides {spec.overrides + list(overrides)} do not apply to "
            f"{spec.base_config.name}: {first}"
        ) from None
    check_config(config)
    names = logged_metrics(config)
    if spec.metric not in names:
        raise SpecError(
            f"{spec.path}: `metric` {spec.metric!r} is not logged by {spec.base_config.name}; "
            f"choose one of {', '.join(names)}"
        )


def load_spec(path, root: Optional[pathlib.Path] = None) -> SweepSpec:
    """Read and validate a sweep spec; relative paths are taken from ``root`` (default: cwd)."""
    path = pathlib.Path(path)
    root = pathlib.Path.cwd() if root is None else pathlib.Path(root)
    where = str(path)
    if not path.is_file():
        raise SpecError(f"sweep spec `{path}` {not_a_file(path)}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise SpecError(f"{where}: not valid YAML: {err}") from err
    unknown = set(raw) - _KEYS
    if unknown:
        raise SpecError(f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(_KEYS)})")
    for key in ("study_name", "base_config", "metric", "parameters"):
        if not raw.get(key):
            raise SpecError(f"{where}: `{key}` is required")
    base = root / raw["base_config"]
    if not base.is_file():
        raise SpecError(f"{where}: base config `{raw['base_config']}` does not exist")
    direction = raw.get("direction", "minimize")
    if direction not in ("minimize", "maximize"):
        raise SpecError(f"{where}: `direction` must be minimize or maximize, got `{direction}`")
    for key, example in (("sampler", "{name: tpe, seed: 0}"), ("pruner", "{name: median}")):
        if raw.get(key) is not None and not isinstance(raw[key], dict):
            raise SpecError(
                f"{where}: `{key}` must be a mapping such as {example}, got {raw[key]!r}"
            )
    sampler = dict(raw.get("sampler") or {"name": "tpe"})
    if sampler.get("name") not in SAMPLERS:
        raise SpecError(f"{where}: unknown sampler `{sampler.get('name')}` (use one of {SAMPLERS})")
    pruner = raw.get("pruner")
    if pruner is not None and dict(pruner).get("name") not in PRUNERS:
        raise SpecError(f"{where}: unknown pruner `{pruner.get('name')}` (use one of {PRUNERS})")
    if not isinstance(raw["parameters"], dict):
        raise SpecError(f"{where}: `parameters` must map variable names to ranges")
    variables = set(compose_config(base).keys())
    rules = {**RULES, "num_layers": num_layers_rule("backbone" in variables)}
    parameters = {
        n: _check_parameter(n, p, where, rules.get(n)) for n, p in raw["parameters"].items()
    }
    missing = sorted(set(parameters) - variables)
    if missing:
        raise SpecError(
            f"{where}: unknown parameter(s) {missing}: not top-level variables of "
            f"{raw['base_config']} (it has e.g. lr, l_max, num_features, num_layers)"
        )
    if sampler["name"] == "grid":
        ranged = [n for n, p in parameters.items() if p["type"] != "categorical"]
        if ranged:
            raise SpecError(f"{where}: a grid sweep needs `choices` for every parameter: {ranged}")
    grid_size = math.prod(len(p["choices"]) for p in parameters.values() if "choices" in p)
    n_trials = raw.get("n_trials")
    if n_trials is None:
        n_trials = grid_size if sampler["name"] == "grid" else 20
    _check_value("n_trials", n_trials, where, Rule("int", 1))
    output_dir = root / raw.get("output_dir", f"sweeps/{raw['study_name']}")
    storage = raw.get("storage") or f"sqlite:///{(output_dir / 'study.db').resolve()}"
    overrides = list(raw.get("overrides") or [])
    return SweepSpec(
        path=path,
        study_name=str(raw["study_name"]),
        base_config=base,
        metric=raw["metric"],
        direction=direction,
        sampler=sampler,
        parameters=parameters,
        n_trials=n_trials,
        pruner=None if pruner is None or pruner.get("name") == "none" else dict(pruner),
        storage=storage,
        output_dir=output_dir,
        overrides=overrides,
    )
