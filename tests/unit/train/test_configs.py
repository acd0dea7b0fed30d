"""Every shipped config composes and its parts instantiate: datamodule, data statistics, loss,
metrics, callbacks and model (data statistics stubbed); the factories give each config its
heads' entries."""

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import get_method, instantiate
from lightning.pytorch.callbacks import EarlyStopping
from omegaconf import OmegaConf

from aniso_nequip.data import DielectricStatisticsManager
from aniso_nequip.train import (
    DielectricLoss,
    DielectricMetrics,
    SelfContainedCheckpoints,
    TrainingProgress,
)
from helpers import CONFIGS

SHIPPED = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
ELECTRONIC = {"irreps_mse", "component_mae", "eps_poly_mae", "a_r_mae", "eigenvalue_mae"}
ELECTRONIC |= {"a_r_spearman"}
STATIC = ELECTRONIC | {
    "ionic_irreps_mse",
    "ionic_component_mae",
    "ionic_eps_poly_mae",
    "ionic_a_r_mae",
    "ionic_eigenvalue_mae",
    "static_eps_poly_mae",
    "static_a_r_mae",
    "born_mse",
    "born_mae",
    "born_isotropic_mae",
}
BUILDERS = {
    "anisonet_scalar": "ScalarAnisoNetModel",
    "anisonet_static": "AnisoNetStaticModel",
    "anisonet_foundation": "FoundationAnisoNetModel",
}


@pytest.fixture
def stub_statistics():
    """``${training_data_stats:NAME}`` as nequip's runner would resolve it (a positive number)."""
    OmegaConf.register_new_resolver("training_data_stats", lambda name: 3.0, replace=True)
    yield
    OmegaConf.clear_resolver("training_data_stats")


def _compose(name, overrides=()):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        return compose(config_name=name, overrides=list(overrides))


def test_every_config_is_tested():
    assert set(SHIPPED) == {
        "anisonet",
        "anisonet_best",
        "anisonet_finetune",
        "anisonet_foundation",
        "anisonet_pretrain",
        "anisonet_scalar",
        "anisonet_single_file",
        "anisonet_static",
        "tiny",
    }


@pytest.mark.parametrize("name", SHIPPED)
def test_config_instantiates(name, trained, stub_statistics):
    if name == "anisonet_foundation":
        pytest.importorskip("sevenn")
    overrides = (
        [f"pretrained={trained['dir'] / 'best.ckpt'}"] if name == "anisonet_finetune" else []
    )
    if name == "anisonet_finetune":
        # the tiny checkpoint's elements and cutoff (checked by SelfContainedCheckpoints)
        source = torch.load(trained["dir"] / "best.ckpt", weights_only=False)["hyper_parameters"]
        names = ",".join(source["model"]["type_names"])
        overrides += [f"model_type_names=[{names}]", f"r_max={source['model']['r_max']}"]
    cfg = _compose(name, overrides)
    for key in (
        "train_file",
        "val_file",
        "test_file",
        "r_max",
        "l_max",
        "num_features",
        "num_layers",
        "batch_size",
        "lr",
        "max_epochs",
        "seed",
        "heads",
        "early_stopping_patience",
    ):
        assert key in cfg, key

    static = name == "anisonet_static"
    metrics = instantiate(cfg.metrics)
    assert set(metrics.entries) == (STATIC if static else ELECTRONIC)
    loss = instantiate(cfg.training_module.loss)
    expected_loss = {"irreps_mse", "ionic_irreps_mse", "born_mse"} if static else {"irreps_mse"}
    if name in ("anisonet_best", "anisonet_pretrain", "anisonet_finetune", "anisonet_foundation"):
        expected_loss = {"irreps_mae"}
    assert set(loss.entries) == expected_loss

    datamodule = instantiate(cfg.data, _recursive_=False)
    assert datamodule.seed == cfg.seed
    stats = OmegaConf.to_container(cfg.data.stats_manager, resolve=True)
    assert instantiate(stats).names[:4] == [
        "num_neighbors_mean",
        "eps_poly_mean",
        "eps_poly_std",
        "eps_2e_rms",
    ]
    callbacks = [
        instantiate(c)
        for c in cfg.trainer.callbacks
        if "hydra:" not in str(OmegaConf.to_container(c))  # ModelCheckpoint: Hydra's run dir
    ]
    assert any(isinstance(c, SelfContainedCheckpoints) for c in callbacks)
    assert any(isinstance(c, TrainingProgress) for c in callbacks)
    # checkpoint and early stopping follow `monitor`, a metric the config logs
    (stopping,) = [c for c in callbacks if isinstance(c, EarlyStopping)]
    assert (stopping.monitor, stopping.mode) == (cfg.monitor, cfg.monitor_mode)
    assert cfg.monitor.removeprefix("val0_epoch/") in {*metrics.entries, "weighted_sum"}
    checkpoint = OmegaConf.to_container(cfg.trainer.callbacks[0])
    assert checkpoint["_target_"].endswith("ModelCheckpoint")
    assert (checkpoint["monitor"], checkpoint["mode"]) == ("${monitor}", "${monitor_mode}")
    if name == "anisonet_foundation":  # the discovery benchmark's winner (row log_select_spearman)
        assert (cfg.readout, cfg.monitor, cfg.monitor_mode) == (
            "log",
            "val0_epoch/a_r_spearman",
            "max",
        )

    model_config = OmegaConf.to_container(cfg.training_module.model, resolve=True)
    model = get_method(model_config.pop("_target_"))(**model_config)
    if name != "anisonet_finetune":
        builder = model_config.get("model_builder", BUILDERS.get(name, "AnisoNetModel"))
        assert cfg.training_module.model._target_ == f"aniso_nequip.model.{builder}"
    assert "dielectric_tensor" in model.irreps_out


def test_pretrain_config_holds_out_the_evaluation_crystals():
    cfg = _compose("anisonet_pretrain")
    assert list(cfg.data.exclude_structures_in) == [
        "datasets/mp_subset_val.extxyz.gz",
        "datasets/mp_subset_test.extxyz.gz",
    ]
    assert cfg.train_file == "datasets/phonondb_train.extxyz.gz"


def test_paper_settings_in_anisonet_config():
    cfg = OmegaConf.load(CONFIGS / "anisonet.yaml")
    assert (cfg.r_max, cfg.l_max, cfg.num_features, cfg.num_layers, cfg.num_basis) == (
        5.0,
        3,
        48,
        2,
        15,
    )
    assert (cfg.lr, cfg.weight_decay, cfg.batch_size, cfg.lr_decay, cfg.max_epochs) == (
        0.003,
        0.03,
        12,
        0.98,
        120,
    )
    assert cfg.loss_metric == "mse" and dict(cfg.heads) == {"dielectric_tensor": 1.0}
    assert cfg.training_module.optimizer._target_ == "torch.optim.AdamW"
    assert list(cfg.run) == ["train", "test"]


def test_config_sizes():
    """Each config states only what differs from the one it builds on."""
    lines = {p.stem: len(p.read_text().splitlines()) for p in CONFIGS.glob("*.yaml")}
    assert lines["anisonet"] < 100 and lines["anisonet_static"] < 50
    assert "dataset_from_file" not in (CONFIGS / "anisonet_pretrain.yaml").read_text()


def test_factories_weights_and_errors():
    heads = {"dielectric_tensor": 1.0, "dielectric_ionic_tensor": 0.05}
    loss = DielectricLoss(coeffs=heads, metric="mae", anisotropic_coeff=0.5)
    assert set(loss.entries) == {"irreps_mae", "ionic_irreps_mae", "anisotropic_mae"}
    metrics = DielectricMetrics(heads=heads)
    assert {"static_eps_poly_mae", "ionic_a_r_mae"} <= set(metrics.entries)
    stats = DielectricStatisticsManager(heads=["born_effective_charges"])
    assert stats.names == ["num_neighbors_mean", "born_rms"]
    with pytest.raises(ValueError, match="mse"):
        DielectricLoss(metric="huber")
    with pytest.raises(ValueError, match="dielectric_tensr"):
        DielectricMetrics(heads={"dielectric_tensr": 1.0})


READOUT_MODULES = {"log": "SymmetricTensorReadout", "local_field": "LocalFieldReadout"}


@pytest.mark.parametrize("readout", sorted(READOUT_MODULES))
@pytest.mark.parametrize("name", [n for n in SHIPPED if n != "anisonet_finetune"])
def test_readout_override(name, readout, stub_statistics):
    """``readout=...`` on the command line reaches every model config's builder (the fine-tuning
    config keeps the readout of the model it loads)."""
    if name == "anisonet_foundation":
        pytest.importorskip("sevenn")
    cfg = _compose(name, [f"readout={readout}"])
    model_config = OmegaConf.to_container(cfg.training_module.model, resolve=True)
    assert model_config["readout"] == readout
    model = get_method(model_config.pop("_target_"))(**model_config)
    static = name == "anisonet_static"
    head = model.model.electronic_readout if static else model.model.tensor_readout
    assert type(head).__name__ == READOUT_MODULES[readout]
    if readout == "log":
        assert head.form == "exp" and head.floor == 1.0


# names that saved configs and checkpoints give as `_target_` (old module, new module, names)
MOVED = [
    (
        "aniso_nequip.train",
        "aniso_nequip.data",
        [
            "DielectricStatisticsManager",
            "AnisotropyRatio",
            "PolycrystallineConstant",
            "SortedEigenvalues",
            "SymmetricTensorIrreps",
            "TensorIsotropicPart",
        ],
    ),
    ("aniso_nequip.train", "aniso_nequip.model", ["BackboneParamGroups"]),
    ("aniso_nequip.train", "aniso_nequip.sweep", ["OptunaPruning"]),
    (
        "aniso_nequip.model.foundation",
        "aniso_nequip.model.sevennet_backbone",
        ["sevennet_backbone"],
    ),
    ("aniso_nequip.model.foundation", "aniso_nequip.model.nequip_backbone", ["nequip_backbone"]),
]
MOVED_NAMES = [(old, new, name) for old, new, names in MOVED for name in names]


@pytest.mark.parametrize(
    "old, new, name", MOVED_NAMES, ids=[f"{old}.{name}" for old, _, name in MOVED_NAMES]
)
def test_old_targets_name_the_moved_objects(old, new, name):
    assert get_method(f"{old}.{name}") is get_method(f"{new}.{name}")
