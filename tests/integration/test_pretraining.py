"""Pre-training then fine-tuning (``nequip-train``): fine-tuning with nequip's loaders gives
self-contained checkpoints and refuses data the source model does not fit."""

import shutil
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from aniso_nequip.train import SelfContainedCheckpoints
from helpers import BIN, ROOT, bundled, predict, run_command

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finetuned(trained, tmp_path_factory):
    """configs/anisonet_finetune.yaml from a copy of the tiny model's checkpoint, 2 epochs."""
    tmp = tmp_path_factory.mktemp("finetune")
    source = tmp / "source.ckpt"
    shutil.copy(trained["dir"] / "best.ckpt", source)
    model = torch.load(source, weights_only=False)["hyper_parameters"]["model"]
    files = trained["files"]
    run_command(
        [
            str(BIN / "nequip-train"),
            "-cn",
            "configs/anisonet_finetune.yaml",
            f"pretrained={source}",
            f"model_type_names=[{','.join(model['type_names'])}]",
            f"r_max={model['r_max']}",
            f"train_file={files['train']}",
            f"val_file={files['val']}",
            f"test_file={files['test']}",
            "max_epochs=2",
            f"hydra.run.dir={tmp / 'run'}",
        ]
    )
    return {"source": source, "dir": tmp / "run", "type_names": model["type_names"]}


def test_finetuned_checkpoint_survives_deleting_its_source(finetuned, tmp_path):
    from aniso_nequip.inference import load_model

    ckpt = finetuned["dir"] / "best.ckpt"
    hparams = torch.load(ckpt, weights_only=False)["hyper_parameters"]
    assert hparams["model"]["_target_"] == "aniso_nequip.model.AnisoNetModel"
    assert hparams["info_dict"]["training_module"]["model"] == hparams["model"]
    frames = bundled("mp_subset_test", ":6")
    source = predict(load_model(finetuned["source"]), frames)
    before = predict(load_model(ckpt), frames)
    assert np.abs(before - source).max() > 1e-4  # it trained

    finetuned["source"].unlink()
    np.testing.assert_array_equal(predict(load_model(ckpt), frames), before)
    package = tmp_path / "finetuned.nequip.zip"
    run_command([str(BIN / "nequip-package"), "build", str(ckpt), str(package)])
    np.testing.assert_allclose(predict(load_model(package), frames), before, atol=1e-6)


def test_finetuning_refuses_other_elements_or_cutoff(trained, tmp_path):
    source = tmp_path / "source.ckpt"
    shutil.copy(trained["dir"] / "best.ckpt", source)
    names = torch.load(source, weights_only=False)["hyper_parameters"]["model"]["type_names"]
    module = SimpleNamespace(
        hparams={
            "model": {
                "_target_": "nequip.model.saved_models.load_saved_model",
                "input_path": str(source),
            }
        }
    )
    SelfContainedCheckpoints(names, 5.0).setup(None, module, "fit")
    with pytest.raises(ValueError, match=r"type_names \['H', 'Li'.*model_type_names \['Li', 'H'"):
        SelfContainedCheckpoints([names[1], names[0], *names[2:]], 5.0).setup(None, module, "fit")
    with pytest.raises(ValueError, match="r_max 5.0 but .* r_max 4.0: set r_max=5.0"):
        SelfContainedCheckpoints(names, 4.0).setup(None, module, "fit")

    files = trained["files"]
    proc = subprocess.run(
        [
            str(BIN / "nequip-train"),
            "-cn",
            "configs/anisonet_finetune.yaml",
            f"pretrained={source}",
            f"model_type_names=[{','.join([names[1], names[0], *names[2:]])}]",
            f"train_file={files['train']}",
            f"val_file={files['val']}",
            f"test_file={files['test']}",
            "max_epochs=1",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "model_type_names ['Li', 'H'" in proc.stderr
    assert not (tmp_path / "run" / "best.ckpt").exists()
