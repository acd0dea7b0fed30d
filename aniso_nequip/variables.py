"""The allowed values of the training configs' top-level variables, in one table.

:data:`RULES` is checked where each value is used, so that a wrong one stops before any training
with a message naming the variable, the value and the allowed range
(``\\`r_max\\` must be a number > 0, got -1``): the model builders check the model's, the
backbone loaders ``backbone_layers``, :func:`~aniso_nequip.model.BackboneParamGroups`
``backbone_lr``, :func:`~aniso_nequip.train.DielectricLoss` ``loss_metric``, the datamodule the
batch sizes, :class:`~aniso_nequip.train.SelfContainedCheckpoints` the optimizer's, and
:class:`~aniso_nequip.train.CheckVariables` (a Hydra callback of every config) all of them as
soon as ``nequip-train`` starts. Each bound is written once: bounds that guard a module of
``nn/`` (which cannot import this one) are defined next to it (:mod:`aniso_nequip.nn.radial`:
the radial bases, ``num_basis``, ``polynomial_cutoff_p`` as nequip's ``PolynomialCutoff``
asserts) and used here; the others are defined here and read by the code that consumes them.
"""

import dataclasses
import numbers
from typing import Any, Mapping, Optional, Tuple

from .errors import InputError
from .nn.radial import MIN_NUM_BASIS, MIN_POLYNOMIAL_CUTOFF_P, RADIAL_BASES


@dataclasses.dataclass(frozen=True)
class Rule:
    """What a variable may be.

    Args:
        kind: ``int``, ``number`` (int or float), ``choice`` or ``bool``
        low: smallest allowed value of an ``int`` or ``number`` (``None``: no bound)
        strict: ``low`` itself is not allowed
        below: values must be smaller than this (``None``: no upper bound)
        choices: the allowed values of a ``choice``
        optional: ``None`` (``null``) is allowed too
    """

    kind: str
    low: Optional[float] = None
    strict: bool = False
    below: Optional[float] = None
    choices: Tuple[Any, ...] = ()
    optional: bool = False

    def describe(self) -> str:
        """The allowed values in words, e.g. ``an integer >= 1``."""
        if self.kind == "choice":
            text = "one of " + ", ".join(map(str, self.choices))
        elif self.kind == "bool":
            text = "true or false"
        else:
            text = "an integer" if self.kind == "int" else "a number"
            if self.low is not None:
                text += f" {'>' if self.strict else '>='} {self.low:g}"
            if self.below is not None:
                text += f"{' and' if self.low is not None else ''} < {self.below:g}"
        return text + (" (or null)" if self.optional else "")

    def allows(self, value) -> bool:
        if value is None:
            return self.optional
        if self.kind == "choice":
            return value in self.choices
        if self.kind == "bool":
            return isinstance(value, bool)
        wanted = numbers.Integral if self.kind == "int" else numbers.Real
        if isinstance(value, bool) or not isinstance(value, wanted):
            return False
        if self.below is not None and not value < self.below:
            return False
        if self.low is None:
            return True
        return value > self.low if self.strict else value >= self.low


READOUTS: Tuple[str, ...] = ("linear", "square", "log", "local_field")
"""Values of ``readout``: how a model's per-atom features become the dielectric tensor."""

RULES: Mapping[str, Rule] = {
    # model
    "model_dtype": Rule("choice", choices=("float32", "float64")),
    "r_max": Rule("number", 0, strict=True),
    "l_max": Rule("int", 0),
    "num_layers": Rule("int", 1),
    "num_features": Rule("int", 1),
    "type_embed_num_features": Rule("int", 1, optional=True),
    "num_basis": Rule("int", MIN_NUM_BASIS),
    "radial_basis": Rule("choice", choices=RADIAL_BASES),
    "polynomial_cutoff_p": Rule("int", MIN_POLYNOMIAL_CUTOFF_P),
    "radial_mlp_depth": Rule("int", 0),
    "radial_mlp_width": Rule("int", 1),
    "head_dropout": Rule("number", 0, below=1),
    "readout": Rule("choice", choices=READOUTS),
    "physical_readout": Rule("bool"),  # what `readout` replaced; saved configs hold it
    "backbone_layers": Rule("int", 1),
    "head_input_features": Rule("int", 1, optional=True),
    "freeze_backbone": Rule("bool"),
    "backbone_lr": Rule("number", 0, strict=True),
    # training
    "seed": Rule("int", 0),
    "batch_size": Rule("int", 1),
    "lr": Rule("number", 0, strict=True),
    "weight_decay": Rule("number", 0),
    "lr_decay": Rule("number", 0, strict=True),
    "max_epochs": Rule("int", 1),
    "early_stopping_patience": Rule("int", 0),
    "monitor_mode": Rule("choice", choices=("min", "max")),
    "loss_metric": Rule("choice", choices=("mse", "mae", "log_mse", "log_mae")),
    "num_workers": Rule("int", 0),
    "wandb": Rule("bool"),
}
"""Variable name -> :class:`Rule`, for every config variable with a restricted range."""


def num_layers_rule(backbone: bool) -> Rule:
    """``num_layers``' rule: at least one convolution, or none on top of a ``backbone``."""
    return dataclasses.replace(RULES["num_layers"], low=0) if backbone else RULES["num_layers"]


def resolve_readout(readout: str = "linear", physical_readout: Optional[bool] = None) -> str:
    """The checked ``readout``, or what the boolean ``physical_readout`` of a saved config stands
    for (``true``: ``square``, ``false``: ``linear``); both at once are refused."""
    check_variable("readout", readout)
    if physical_readout is None:
        return readout
    check_variable("physical_readout", physical_readout)
    if readout != "linear":
        raise InputError(
            "give `readout` alone: `physical_readout` is its old boolean form "
            f"(got readout={readout!r} and physical_readout={physical_readout!r})"
        )
    return "square" if physical_readout else "linear"


def check_variable(name: str, value, rule: Optional[Rule] = None) -> None:
    """Raise :class:`~aniso_nequip.errors.InputError` unless ``value`` obeys ``rule`` (default:
    ``RULES[name]``)."""
    rule = rule or RULES[name]
    if not rule.allows(value):
        raise InputError(f"`{name}` must be {rule.describe()}, got {value!r}")


def check_variables(**values) -> None:
    """:func:`check_variable` for each ``name=value``."""
    for name, value in values.items():
        check_variable(name, value)


def check_config(config: Mapping) -> None:
    """Check the top-level variables of ``config`` (a training config) that :data:`RULES` names;
    the others, and those it lacks, are left alone. With a ``backbone``, ``num_layers`` may be 0.
    """
    rules = {**RULES, "num_layers": num_layers_rule("backbone" in config)}
    for name, rule in rules.items():
        if name in config:
            check_variable(name, config[name], rule)
    if "monitor" in config and "monitor_mode" in config:
        check_monitor(config["monitor"], config["monitor_mode"])


def check_monitor(monitor: str, mode: str) -> None:
    """``monitor_mode`` must suit ``monitor``: ``max`` for a rank correlation (a name ending in
    ``_spearman``), ``min`` for a loss or an MAE; the wrong one would keep the worst epoch."""
    wanted = "max" if str(monitor).endswith("_spearman") else "min"
    if mode != wanted:
        raise InputError(
            f"`monitor_mode` must be {wanted} for `monitor: {monitor}` "
            f"({'higher' if wanted == 'max' else 'lower'} is better), got {mode!r}"
        )
