"""Starting a model from the weights of another one (pre-training, then fine-tuning)."""

import torch


def load_pretrained_weights(network: torch.nn.Module, checkpoint_path: str) -> None:
    """Copy the weights of the model in ``checkpoint_path`` (a ``.ckpt`` or ``.nequip.zip``; its
    EMA weights where it has them) into ``network``, which must have the same architecture.

    Every buffer is copied too, data-derived constants included (the ``avg_num_neighbors``
    normalisation, output shift and scales): the pre-trained weights only make sense with them, so
    the new model starts out predicting exactly what the pre-trained one does.
    """
    from nequip.model.utils import fresh_model_builder_context

    from ..inference import load_model

    with fresh_model_builder_context():
        trained = load_model(checkpoint_path)
    try:
        network.load_state_dict(trained.model.state_dict())
        buffers = dict(network.named_buffers())
        with torch.no_grad():
            for name, value in trained.model.named_buffers():
                buffers[name].copy_(value)
    except (RuntimeError, KeyError) as err:
        raise ValueError(
            f"pre-trained model `{checkpoint_path}` does not fit the model being built (train "
            f"both with the same architecture: r_max, l_max, num_layers, num_features, elements, "
            f"...): {err}"
        ) from err
