"""Every config-variable rule (:data:`aniso_nequip.variables.RULES`) against the code that consumes
the value: that code accepts the rule's boundary value (each choice, ``null`` where optional), and
the config check refuses the next value beyond it with a one-line message naming the variable."""

import math

import lightning
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from aniso_nequip.data import DielectricDataModule
from aniso_nequip.errors import InputError
from aniso_nequip.model import AnisoNetModel, BackboneParamGroups, FoundationAnisoNetModel
from aniso_nequip.train import DielectricLoss, loggers
from aniso_nequip.variables import RULES, check_config, num_layers_rule
from helpers import build_tiny

TYPE_NAMES = ["H", "Li", "O", "Si"]
SEVENNET_R_MAX = 5.0  # 7net-0's cutoff


def _model(name, value):
    model = build_tiny(AnisoNetModel, type_names=TYPE_NAMES, **{name: value})
    assert model.metadata["r_max"]  # a GraphModel was built


def _foundation(name, value):
    args = dict(r_max=SEVENNET_R_MAX, backbone_layers=1, num_layers=1, model_dtype="float32")
    build_tiny(FoundationAnisoNetModel, type_names=["O", "Si"], **{**args, name: value})


def _backbone_lr(name, value):
    groups = BackboneParamGroups(_frozen_free_foundation(), backbone_lr=value)
    optimizer = torch.optim.AdamW(groups, lr=1e-3)
    assert optimizer.param_groups[1]["lr"] == value


def _frozen_free_foundation():
    return build_tiny(
        FoundationAnisoNetModel,
        type_names=["O", "Si"],
        r_max=SEVENNET_R_MAX,
        backbone_layers=1,
        num_layers=1,
        model_dtype="float32",
        freeze_backbone=False,
    )


def _seed(name, value):
    build_tiny(AnisoNetModel, type_names=TYPE_NAMES, seed=value)
    assert lightning.seed_everything(value, verbose=False) == value


def _batch_size(name, value):
    DielectricDataModule(
        seed=0, train_file_path="never-read.extxyz", train_dataloader={"batch_size": value}
    )
    assert len(next(iter(torch.utils.data.DataLoader(range(3), batch_size=value)))) == value


def _optimizer(name, value):
    torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], **{name: value})


def _lr_decay(name, value):
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1.0)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=value)
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(value)


def _max_epochs(name, value):
    trainer = lightning.Trainer(
        max_epochs=value,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    assert trainer.max_epochs == value


def _patience(name, value):
    assert EarlyStopping(monitor="val0_epoch/weighted_sum", patience=value).patience == value


def _monitor_mode(name, value):
    for callback in (ModelCheckpoint, EarlyStopping):
        assert callback(monitor="val0_epoch/weighted_sum", mode=value).mode == value


def _loss_metric(name, value):
    assert list(DielectricLoss(metric=value).entries) == [f"irreps_{value}"]


def _num_workers(name, value):
    assert torch.utils.data.DataLoader(range(3), num_workers=value).num_workers == value


def _wandb(name, value, tmp_path):
    assert len(loggers(save_dir=str(tmp_path), wandb=value)) == 1 + value


CONSUMERS = {
    # the variable -> what consumes it, called as consumer(name, value)
    "model_dtype": _model,
    "r_max": _model,
    "l_max": _model,
    "num_layers": _model,
    "num_features": _model,
    "type_embed_num_features": _model,
    "num_basis": _model,
    "radial_basis": _model,
    "polynomial_cutoff_p": _model,
    "radial_mlp_depth": _model,
    "radial_mlp_width": _model,
    "head_dropout": _model,
    "readout": _model,
    "physical_readout": _model,
    "backbone_layers": _foundation,
    "freeze_backbone": _foundation,
    "head_input_features": _foundation,
    "backbone_lr": _backbone_lr,
    "seed": _seed,
    "batch_size": _batch_size,
    "lr": _optimizer,
    "weight_decay": _optimizer,
    "lr_decay": _lr_decay,
    "max_epochs": _max_epochs,
    "early_stopping_patience": _patience,
    "monitor_mode": _monitor_mode,
    "loss_metric": _loss_metric,
    "num_workers": _num_workers,
    "wandb": _wandb,
}


CHECKED_BY_CONSUMER = {name for name, consumer in CONSUMERS.items() if consumer is _model} - {
    "model_dtype"  # nequip's model_builder reads it
} | {"backbone_layers", "freeze_backbone", "head_input_features", "backbone_lr", "loss_metric"}
"""Variables whose consumer checks the rule itself (the others reach nequip, lightning or torch,
which ``CheckVariables`` guards when ``nequip-train`` starts)."""


def _boundary(rule):
    """The values at the edge of ``rule``: each choice or both booleans, the bound itself (just
    above it when strict), and ``None`` when optional."""
    if rule.kind == "choice":
        values = list(rule.choices)
    elif rule.kind == "bool":
        values = [False, True]
    elif rule.strict:
        values = [math.nextafter(rule.low, math.inf) if rule.kind == "number" else rule.low + 1]
    else:
        values = [int(rule.low) if rule.kind == "int" else float(rule.low)]
    if rule.below is not None:
        values.append(math.nextafter(rule.below, -math.inf))
    return values + [None] * rule.optional


def _beyond(rule):
    """The next value the rule refuses."""
    if rule.kind == "choice":
        return f"not-{rule.choices[0]}"
    if rule.kind == "bool":
        return 1  # an integer, not a boolean
    if rule.strict:
        return rule.low
    return int(rule.low) - 1 if rule.kind == "int" else math.nextafter(rule.low, -math.inf)


def test_every_rule_has_its_consumer():
    assert set(CONSUMERS) == set(RULES)
    assert all(rule.low is not None for rule in RULES.values() if rule.kind in ("int", "number"))


CASES = [(name, value) for name, rule in RULES.items() for value in _boundary(rule)]


@pytest.mark.filterwarnings("ignore:with l_max=0 and num_layers=2 no 2e feature")
@pytest.mark.parametrize("name, value", CASES, ids=[f"{n}={v!r}" for n, v in CASES])
def test_boundary_value_is_accepted_by_its_consumer(name, value, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    check_config({name: value})
    consumer = CONSUMERS[name]
    if consumer is _wandb:
        consumer(name, value, tmp_path)
    else:
        consumer(name, value)


@pytest.mark.parametrize("name", list(RULES))
def test_next_value_beyond_is_refused(name):
    rule, value = RULES[name], _beyond(RULES[name])
    message = f"`{name}` must be {rule.describe()}, got {value!r}"
    with pytest.raises(InputError) as err:
        check_config({name: value})
    assert str(err.value) == message
    if name in CHECKED_BY_CONSUMER:
        with pytest.raises(InputError) as err:
            CONSUMERS[name](name, value)
        assert str(err.value) == message


@pytest.mark.parametrize("name", [name for name, rule in RULES.items() if rule.below is not None])
def test_upper_bound_is_refused(name):
    rule = RULES[name]
    with pytest.raises(InputError, match=f"`{name}` must be {rule.describe()}"):
        check_config({name: rule.below})


def test_num_layers_may_be_zero_on_a_backbone():
    """With a backbone, ``num_layers``' bound is 0: the foundation model builds with no head
    convolution, and -1 is refused."""
    assert num_layers_rule(backbone=True).low == 0
    _foundation("num_layers", 0)
    check_config({"backbone": "7net-0", "num_layers": 0})
    with pytest.raises(InputError, match="`num_layers` must be an integer >= 0, got -1"):
        check_config({"backbone": "7net-0", "num_layers": -1})


def test_radial_rules_are_the_bounds_of_the_radial_module():
    """The radial rules are :mod:`aniso_nequip.nn.radial`'s constants (nequip's
    ``PolynomialCutoff`` asserts ``p >= 2``), and both bases build at their lowest values."""
    from aniso_nequip.nn import radial

    assert RULES["radial_basis"].choices is radial.RADIAL_BASES
    assert RULES["num_basis"].low == radial.MIN_NUM_BASIS == 2
    assert RULES["polynomial_cutoff_p"].low == radial.MIN_POLYNOMIAL_CUTOFF_P == 2
    for basis in radial.RADIAL_BASES:
        model = build_tiny(
            AnisoNetModel,
            type_names=TYPE_NAMES,
            radial_basis=basis,
            num_basis=radial.MIN_NUM_BASIS,
            polynomial_cutoff_p=radial.MIN_POLYNOMIAL_CUTOFF_P,
        )
        encoding = dict(model.model.named_children())["radial_basis"]
        assert encoding.irreps_out["edge_embedding"].dim == radial.MIN_NUM_BASIS


@pytest.mark.parametrize(
    "monitor, mode",
    [("val0_epoch/a_r_spearman", "min"), ("val0_epoch/weighted_sum", "max")],
)
def test_monitor_mode_must_suit_the_monitor(monitor, mode):
    """A Spearman kept at its lowest, or a loss at its highest, would select the worst epoch."""
    wanted = {"min": "max", "max": "min"}[mode]
    with pytest.raises(InputError) as err:
        check_config({"monitor": monitor, "monitor_mode": mode})
    assert str(err.value) == (
        f"`monitor_mode` must be {wanted} for `monitor: {monitor}` "
        f"({'higher' if wanted == 'max' else 'lower'} is better), got {mode!r}"
    )
    check_config({"monitor": monitor, "monitor_mode": wanted})
