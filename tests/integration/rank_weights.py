"""A Lightning callback for the DDP test: each rank saves its model weights when training ends."""

import torch
from lightning.pytorch.callbacks import Callback


class SaveRankWeights(Callback):
    """Save ``{world_size, steps, state_dict}`` of each rank's model to ``dirpath/rank<N>.pt``."""

    def __init__(self, dirpath: str):
        self.dirpath = dirpath

    def on_train_end(self, trainer, pl_module):
        torch.save(
            {
                "world_size": trainer.world_size,
                "steps": trainer.global_step,
                "state_dict": pl_module.model.state_dict(),
            },
            f"{self.dirpath}/rank{trainer.global_rank}.pt",
        )
