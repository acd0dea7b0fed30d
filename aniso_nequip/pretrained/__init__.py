"""The ready model shipped inside the package: its files and its model card.

``MODEL_CARD.md`` beside this file describes it (data, licence, architecture, test errors,
elements, limits); ``model_card.json`` holds the same facts for programs. The files are nequip
packages, so they load with nequip alone (no SevenNet install needed). ``release/ship_model.py``
rebuilds them from scratch.
"""

import json
import pathlib
from typing import Dict, List

HERE = pathlib.Path(__file__).resolve().parent


def model_card() -> Dict:
    """The shipped model's card (``model_card.json``)."""
    return json.loads((HERE / "model_card.json").read_text())


def model_paths() -> List[str]:
    """Paths of the shipped model files: several make an ensemble, whose mean is the prediction
    and whose spread is its uncertainty."""
    return [str(HERE / name) for name in model_card()["files"]]
