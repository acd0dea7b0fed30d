"""Scale-out: the shipped config trains with Lightning DDP, here 2 CPU processes."""

import pathlib
import socket

import pytest
import torch

from helpers import BIN, run_command, split_files

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_on_two_cpu_processes_keeps_ranks_in_step(tmp_path):
    files = split_files(tmp_path, train=16, val=8)
    callback = f"{{_target_:rank_weights.SaveRankWeights,dirpath:{tmp_path}}}"
    run_command(
        [
            str(BIN / "nequip-train"),
            "-cn",
            "configs/tiny.yaml",
            "run=[train]",
            f"train_file={files['train']}",
            f"val_file={files['val']}",
            f"test_file={files['val']}",
            "max_epochs=2",
            f"hydra.run.dir={tmp_path / 'run'}",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "+trainer.strategy=ddp",
            f"trainer.callbacks=[{callback}]",
        ],
        PYTHONPATH=str(pathlib.Path(__file__).parent),  # for rank_weights.SaveRankWeights
        MASTER_PORT=str(_free_port()),
        OMP_NUM_THREADS="1",
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    # 16 crystals, batches of 4, split over 2 ranks: 2 steps per epoch on each
    assert ranks[0]["steps"] == ranks[1]["steps"] == 4
    weights = [r["state_dict"] for r in ranks]
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        torch.testing.assert_close(weights[0][name], weights[1][name], rtol=0, atol=0)
