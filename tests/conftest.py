"""Fixtures of every test layer (``tests/unit``, ``tests/integration``).

nequip's own test fixtures (``default_dtype``, which sets nequip's global state for the session,
``model_dtype``, ``molecules``, ``Cu_bulk``, ... for nequip's model test mixins) come from
executing nequip's conftest here, as nequip-allegro does."""

import signal

import ase.build
import ase.io
import pytest
from nequip.utils.unittests import CONFTEST_PATH

from helpers import BIN, ROOT, build_tiny, bundled, run_command, split_files

# like `source` in bash
with open(CONFTEST_PATH) as f:
    exec(f.read())

# fixtures that run nequip-train: every test that uses one is slow
TRAINING_FIXTURES = {"trained", "packaged"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def small_frames():
    """Low-symmetry real crystals (triclinic/monoclinic first) from the bundled test split."""
    frames = bundled("mp_subset_test")
    frames.sort(key=lambda f: f.info["crystal_system"] not in ("triclinic", "monoclinic"))
    return [f for f in frames if len(f) <= 12][:4]


@pytest.fixture(scope="session")
def symmetric_cells():
    return {
        "rocksalt": ase.build.bulk("NaCl", "rocksalt", a=5.64),
        "diamond": ase.build.bulk("C", "diamond", a=3.57),
        "rocksalt_conventional": ase.build.bulk("MgO", "rocksalt", a=4.21, cubic=True),
        "wurtzite": ase.build.bulk("ZnO", "wurtzite", a=3.25, c=5.21),
    }


@pytest.fixture(scope="session")
def type_names(small_frames, symmetric_cells):
    symbols = {s for f in small_frames + list(symmetric_cells.values()) for s in f.symbols}
    return sorted(symbols)


@pytest.fixture(scope="session")
def equivariant_model(type_names):
    from aniso_nequip.model import AnisoNetModel

    return build_tiny(AnisoNetModel, type_names=type_names)


@pytest.fixture(scope="session")
def scalar_model(type_names):
    from aniso_nequip.model import ScalarAnisoNetModel

    return build_tiny(ScalarAnisoNetModel, type_names=type_names)


@pytest.fixture(scope="session")
def build_model(type_names):
    def _make(builder, **kwargs):
        return build_tiny(builder, **{"type_names": type_names, **kwargs})

    return _make


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A tiny model trained for a few epochs on 48 crystals of the bundled MP training split."""
    tmp = tmp_path_factory.mktemp("train")
    files = split_files(tmp, train=48, val=16)
    # 12 test crystals of other systems and 4 cubic ones
    test = bundled("mp_subset_test")
    files["test"] = tmp / "test.extxyz"
    ase.io.write(
        files["test"],
        [f for f in test if f.info["crystal_system"] != "cubic"][:12]
        + [f for f in test if f.info["crystal_system"] == "cubic"][:4],
    )
    run_dir = tmp / "run"
    proc = run_command(
        [
            str(BIN / "nequip-train"),
            "-cn",
            "configs/tiny.yaml",
            f"train_file={files['train']}",
            f"val_file={files['val']}",
            f"test_file={files['test']}",
            "max_epochs=8",
            f"hydra.run.dir={run_dir}",
        ]
    )
    (metrics_csv,) = run_dir.glob("csv/version_*/metrics.csv")
    console = proc.stdout + proc.stderr
    return {"dir": run_dir, "files": files, "metrics_csv": metrics_csv, "console": console}


@pytest.fixture(scope="session")
def packaged(trained):
    """The trained tiny model as a ``nequip-package`` archive."""
    package = trained["dir"] / "model.nequip.zip"
    run_command(
        [str(BIN / "nequip-package"), "build", str(trained["dir"] / "best.ckpt"), str(package)]
    )
    return package


@pytest.fixture(scope="module")
def split_overrides(tmp_path_factory):
    """Small train/val/test files (8/4/4 bundled crystals) as ``key=value`` overrides of the
    tiny config."""
    tmp = tmp_path_factory.mktemp("split_overrides")
    out = []
    for split, n in (("train", 8), ("val", 4), ("test", 4)):
        path = tmp / f"{split}.extxyz"
        ase.io.write(path, bundled(f"mp_subset_{split}", f":{n}"))
        out.append(f"{split}_file={path}")
    return out


@pytest.fixture
def in_root(monkeypatch):
    """The test runs in the repository root (configs/ found by relative path)."""
    monkeypatch.chdir(ROOT)


@pytest.fixture(autouse=True)
def _default_sigint():
    """Each test starts with Python's own SIGINT handler (an earlier test's library may leave
    another one, which the processes a test starts would inherit)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
