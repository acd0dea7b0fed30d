"""Loading trained models and predicting dielectric tensors from Python.

import aniso_nequip
model = aniso_nequip.load_model("outputs/.../best.ckpt")      # or .nequip.zip / .nequip.pt2
eps = aniso_nequip.predict(structures, model)                # (N, 3, 3) numpy array
optics = aniso_nequip.predict(structures, field="optics")    # the ready model; n_o, n_e, ...

:mod:`.loading` reads models (and what they record of their training data), :mod:`.ensembles`
combines several into one prediction and its spread, :mod:`.batches` predicts batch by batch and
reports failed predictions.
"""

from .batches import predict, predict_batches, predict_members, split_failed
from .ensembles import (
    Ensemble,
    as_ensemble,
    ensemble_mean,
    ensemble_members,
    ensemble_spread,
    member_outputs,
)
from .loading import (
    COMPILED_SUFFIX,
    CompiledModel,
    ModelLoadError,
    as_model,
    check_device,
    common_type_names,
    load_model,
    output_fields,
    training_elements,
    untrained_warnings,
)

__all__ = [
    "COMPILED_SUFFIX",
    "CompiledModel",
    "Ensemble",
    "ModelLoadError",
    "as_ensemble",
    "as_model",
    "check_device",
    "common_type_names",
    "ensemble_mean",
    "ensemble_members",
    "ensemble_spread",
    "load_model",
    "member_outputs",
    "output_fields",
    "predict",
    "predict_batches",
    "predict_members",
    "split_failed",
    "training_elements",
    "untrained_warnings",
]
