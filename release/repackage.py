"""Rebuild the shipped ready model's package with the current model code and the same weights.

A nequip package interns the code of its modules, so the shipped model keeps running the code it
was packaged with. This script rebuilds each shipped package the way ``nequip-package build``
builds one from a checkpoint: the training module from the package's own config (its resolved
training config), the package's weights loaded into it, saved as a checkpoint, packaged; then
checks that the new package predicts the bundled test split as the old one does (1e-5 of each
tensor's largest component) and updates the sha256 sums of ``model_card.json``.

    python -m release.repackage
    python -m release.repackage --shipped /tmp/pretrained   # a copy of aniso_nequip/pretrained
    python -m release.repackage --shipped /tmp/pretrained --slice 8   # a smoke run
"""

import argparse
import hashlib
import json
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import torch

from aniso_nequip.io import atomic_file
from aniso_nequip.saved_models import training_info

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "aniso_nequip" / "pretrained"
PACKAGE = str(pathlib.Path(sys.executable).parent / "nequip-package")
TEST_FILE = ROOT / "datasets" / "mp_subset_test.extxyz.gz"


def load_package_weights(model: torch.nn.Module, package: pathlib.Path) -> None:
    """Load the weights of ``package``'s model into ``model`` (the same architecture). Only the
    constants e3nn's generated tensor-product code keeps as tensors (``_tensor_constant*``) may
    differ: they are rebuilt from the irreps, not trained."""
    from nequip.model import ModelFromPackage
    from nequip.model.utils import fresh_model_builder_context

    with fresh_model_builder_context():
        source = ModelFromPackage(str(package))["sole_model"]
    result = model.load_state_dict(source.state_dict(), strict=False)
    odd = [k for k in result.missing_keys + result.unexpected_keys if "_tensor_constant" not in k]
    if odd:
        raise RuntimeError(f"`{package}` does not fit the model built from its config: {odd}")


def checkpoint_from_package(package: pathlib.Path, path: pathlib.Path) -> None:
    """A nequip checkpoint of ``package``'s training module and weights, built by the current
    code."""
    import lightning
    from hydra.utils import instantiate
    from nequip.utils.global_state import set_global_state
    from nequip.utils.versions import get_current_code_versions

    set_global_state()
    info_dict = training_info(package)
    info_dict["versions"] = get_current_code_versions(verbose=False)
    datasets = {"train": 1, "val": 1, "test": 1}
    module = instantiate(
        info_dict["training_module"],
        _recursive_=False,
        _convert_="all",
        num_datasets=datasets,
        info_dict=info_dict,
    )
    load_package_weights(module.model["sole_model"], package)
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": lightning.__version__,
        },
        path,
    )


def _predict(package: pathlib.Path, out: pathlib.Path, crystals: str) -> np.ndarray:
    # each package in its own process: two packages of one name do not share an importer
    script = (
        "import numpy as np, aniso_nequip, ase.io\n"
        f"frames = ase.io.read('{TEST_FILE}', '{crystals}')\n"
        f"np.save('{out}', aniso_nequip.predict(frames, '{package}'))\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True)
    return np.load(out)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--shipped", default=str(SHIPPED), help="folder of the shipped files (default: the package)"
    )
    parser.add_argument(
        "--slice",
        type=int,
        dest="slice_n",
        help="check on the first N test crystals only (smoke runs; default: all 111)",
    )
    args = parser.parse_args(argv)
    shipped = pathlib.Path(args.shipped).resolve()
    crystals = f":{args.slice_n}" if args.slice_n else ":"
    card_path = shipped / "model_card.json"
    card = json.loads(card_path.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        for name in card["files"]:
            old = shipped / name
            # packaged as ship_model.py does it (the archive's folder is named after the file)
            ckpt, new = tmp / "rebuilt.ckpt", tmp / "model.nequip.zip"
            checkpoint_from_package(old, ckpt)
            subprocess.run([PACKAGE, "build", str(ckpt), str(new)], cwd=ROOT, check=True)
            before = _predict(old, tmp / "old.npy", crystals)
            after = _predict(new, tmp / "new.npy", crystals)
            scale = np.abs(before).max(axis=(1, 2), keepdims=True)
            change = float(np.max(np.abs(after - before) / scale))
            print(f"{name}: largest relative change of a predicted tensor {change:.1e}")
            if change > 1e-5:
                raise SystemExit(f"{name}: the rebuilt package predicts differently; not shipped")
            with atomic_file(old, force=True) as out:
                out.write_bytes(new.read_bytes())
            card["sha256"][name] = hashlib.sha256(old.read_bytes()).hexdigest()
    with atomic_file(card_path, force=True) as out:
        out.write_text(json.dumps(card, indent=2) + "\n")


if __name__ == "__main__":
    main()
