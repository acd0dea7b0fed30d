"""Training and inference throughput of the shipped configs on the bundled MP training split.

For each config, compile mode (``eager``; ``compile``: nequip's ``torch.compile`` mode;
``aotinductor``: the model exported as ``nequip-compile --mode aotinductor --target
batch_dielectric`` (``batch_dielectric_static`` for the static model) does it, inference only) and
device (``cpu``; ``cuda`` when present), measured in its own process: training structures/s
(forward + loss + backward + AdamW step, batches of the config's ``batch_size``, data loading and
neighbour lists included, as in nequip-train), inference structures/s (batches of 32, or
``--infer-batch-size``, no gradients),
peak resident memory (and GPU memory), parameter count. Prints a table and writes the figures as
JSON (``--out``) for ``benchmarks/results.py``. Not a test: figures depend on the machine.

    python -m benchmarks.speed                                   # every config and mode
    python -m benchmarks.speed --configs configs/anisonet.yaml --modes eager aotinductor
    python -m benchmarks.speed --devices cuda l_max=2            # trailing Hydra overrides
    python -m benchmarks.speed --foundation --out benchmarks/runs/speed_cpu_levers.json
    python -m benchmarks.speed --foundation --modes eager --training-paths cache head_input_16

``--foundation`` measures instead, side by side, today's path and the new one for the frozen
foundation config and the shipped ready model (issue 25): training structures/s without and with
the backbone feature cache (``backbone_cache``; the cache starts empty in a temporary folder, so
``setup_s`` includes filling it for the training split), with the transformed frames also kept
in memory across epochs (``data.keep_in_memory``, as the config ships) and with nequip's
``compile_mode=compile`` on top, with the backbone's features mapped to 16 channels of each irrep
before the head (``head_input_features=16``: a recipe change, whose accuracy is the discovery
benchmark's row ``head_input_16``), and the shipped model's inference at batches of 32 and one
structure at a time, one row per lever (``benchmarks/levers.py``). About 15 minutes on 2 CPU
threads of a machine to itself (the compiled rows compile for minutes first).

Training figures are those of the epochs after the first: one pass over the training data
(no steps) comes before the warm-up batches and the timed ones.
"""

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import get_class, instantiate
from nequip.data import AtomicDataDict
from nequip.utils.global_state import set_global_state
from omegaconf import OmegaConf

from aniso_nequip.io import atomic_file
from benchmarks.levers import LEVERS
from benchmarks.machine import describe

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = [
    f"configs/anisonet{name}.yaml" for name in ("", "_scalar", "_best", "_static", "_foundation")
]


def _load(config: pathlib.Path, overrides):
    with initialize_config_dir(config_dir=str(config.parent.resolve()), version_base=None):
        cfg = compose(config_name=config.stem, overrides=overrides)
    datamodule = instantiate(OmegaConf.to_container(cfg.data, resolve=True), _recursive_=False)
    datamodule.prepare_data()
    stats = datamodule.get_statistics(dataset="train")
    datamodule.setup("fit")
    OmegaConf.register_new_resolver("training_data_stats", lambda name: stats[name], replace=True)
    model = instantiate(OmegaConf.to_container(cfg.training_module.model, resolve=True))
    loss = instantiate(OmegaConf.to_container(cfg.training_module.loss, resolve=True))
    optim_cfg = OmegaConf.to_container(cfg.training_module.optimizer, resolve=True)
    return cfg, datamodule, model, loss, optim_cfg


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _batches(loader, device, limit):
    for i, batch in enumerate(loader):
        if i >= limit:
            return
        yield AtomicDataDict.to_(batch, device)


def _throughput(step, loader, device, warmup, batches):
    """Structures passed through ``step`` and the seconds it took, after ``warmup`` batches."""
    for batch in _batches(loader, device, warmup):
        step(batch)
    _sync(device)
    n, start = 0, time.perf_counter()
    for batch in _batches(loader, device, batches):
        step(batch)
        n += AtomicDataDict.num_frames(batch)
    _sync(device)
    return n, time.perf_counter() - start


def aot_export(model, data, device, path):
    """Export ``model`` as ``nequip-compile --mode aotinductor`` does it with aniso-nequip's batch
    target (same target settings and metadata), ``data`` the example graph."""
    from nequip.scripts._compile_utils import COMPILE_TARGET_DICT
    from nequip.utils.aot import aot_export_model
    from nequip.utils.aoti_metadata import (
        NEQUIP_AOTI_INPUTS_KEY,
        NEQUIP_AOTI_OUTPUTS_KEY,
        serialize_aoti_keys,
    )
    from nequip.utils.global_state import get_latest_global_state

    from aniso_nequip._compile import (
        BATCH_DIELECTRIC_STATIC_TARGET,
        BATCH_DIELECTRIC_TARGET,
        STATIC_OUTPUTS,
    )
    from aniso_nequip.inference import output_fields

    static = output_fields(model) == STATIC_OUTPUTS
    target = BATCH_DIELECTRIC_STATIC_TARGET if static else BATCH_DIELECTRIC_TARGET
    target = COMPILE_TARGET_DICT[target]
    metadata = {**model.metadata, **get_latest_global_state(only_metadata_related=True)}
    metadata = {k: str(int(v)) if isinstance(v, bool) else str(v) for k, v in metadata.items()}
    metadata[NEQUIP_AOTI_INPUTS_KEY] = serialize_aoti_keys(target["input"])
    metadata[NEQUIP_AOTI_OUTPUTS_KEY] = serialize_aoti_keys(target["output"])
    dims = {kind: torch.export.Dim(f"num_{kind}s", min=2) for kind in ("graph", "node", "edge")}
    aot_export_model(
        model=model,
        device=device,
        input_fields=target["input"],
        output_fields=target["output"],
        data=AtomicDataDict.to_(target["data_settings"](data), device),
        batch_map=target["batch_map_settings"](dims),
        output_path=str(path),
        inductor_configs={"aot_inductor.metadata": metadata},
    )


def _aot_compiled(model, datamodule, device, path):
    """``model`` exported by :func:`aot_export` (data from the training set), loaded back by
    :func:`aniso_nequip.load_model`."""
    from aniso_nequip.inference import load_model

    data = AtomicDataDict.batched_from_list([datamodule.train_dataset[0][0]])
    aot_export(model, data, device, path)
    return load_model(path, device)


def measure(
    config,
    device,
    compile_mode,
    overrides,
    train_batches=40,
    infer_batches=15,
    warmup=3,
    infer_batch_size=32,
):
    """Figures of one config/device/compile mode, measured in this process."""
    set_global_state()
    device = torch.device(device)
    aot = compile_mode == "aotinductor"
    model_mode = "eager" if aot else compile_mode
    overrides = [*overrides, f"++training_module.model.compile_mode={model_mode}"]
    setup_start = time.perf_counter()
    cfg, datamodule, model, loss_fn, optim_cfg = _load(pathlib.Path(config), overrides)
    setup_s = time.perf_counter() - setup_start
    model = model.to(device)
    # as nequip's training module does: parameter groups (e.g. a backbone's) when configured
    param_groups = optim_cfg.pop("param_groups", None)
    params = instantiate(param_groups, model=model) if param_groups else model.parameters()
    optimizer = get_class(optim_cfg.pop("_target_"))(params=params, **optim_cfg)

    def train_step(batch):
        optimizer.zero_grad(set_to_none=True)
        out = model(batch)
        loss = loss_fn(out, batch)["weighted_sum"]
        loss.backward()
        optimizer.step()
        loss_fn.reset()

    n_train, train_time = None, None
    if not aot:  # a compiled model only predicts
        for _ in datamodule.train_dataloader():  # the first epoch's data (transforms, caches)
            pass
        model.train()
        n_train, train_time = _throughput(
            train_step, datamodule.train_dataloader(), device, warmup, train_batches
        )
    infer_loader = torch.utils.data.DataLoader(
        datamodule.train_dataset[0],
        batch_size=infer_batch_size,
        collate_fn=AtomicDataDict.batched_from_list,
    )
    model.eval()
    parameters = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    predictor = model
    if aot:
        with tempfile.TemporaryDirectory() as tmp:
            predictor = _aot_compiled(model, datamodule, device, f"{tmp}/model.nequip.pt2")
    with torch.no_grad():
        n_infer, infer_time = _throughput(predictor, infer_loader, device, warmup, infer_batches)

    result = {
        "config": os.path.relpath(config, ROOT),
        "overrides": list(overrides[:-1]),
        "device": str(device),
        "compile_mode": compile_mode,
        "torch_threads": torch.get_num_threads(),
        "parameters": parameters,
        "trainable_parameters": trainable,
        "batch_size": int(cfg.batch_size),
        "train_structures_per_s": None if aot else round(n_train / train_time, 2),
        "train_structures_timed": n_train,
        "inference_batch_size": infer_batch_size,
        "inference_structures_per_s": round(n_infer / infer_time, 2),
        "inference_structures_timed": n_infer,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_gpu_memory_mb": None,
        "setup_s": round(setup_s, 1),
    }
    if device.type == "cuda":
        result["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return result


def _measure_in_subprocess(args, config, device, mode):
    command = [
        sys.executable,
        "-m",
        "benchmarks.speed",
        "--one",
        config,
        device,
        mode,
        "--train-batches",
        str(args.train_batches),
        "--infer-batches",
        str(args.infer_batches),
        "--warmup",
        str(args.warmup),
        "--infer-batch-size",
        str(args.infer_batch_size),
        *args.overrides,
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode:
        tail = "\n".join(result.stderr.strip().splitlines()[-5:])
        return {
            "config": os.path.relpath(config, ROOT),
            "device": device,
            "compile_mode": mode,
            "error": tail,
        }
    return json.loads(result.stdout.strip().splitlines()[-1])


def _levers_in_subprocess(batch_size, num_structures, levers, warmup):
    code = (
        "import json; from benchmarks import levers; print(json.dumps(levers.measure_levers("
        f"{batch_size}, {num_structures}, warmup={warmup}, levers={levers!r})))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    if result.returncode:
        tail = "\n".join(result.stderr.strip().splitlines()[-5:])
        return [{"lever": "all", "batch_size": batch_size, "error": tail}]
    return json.loads(result.stdout.strip().splitlines()[-1])


# the frozen foundation config's training paths of ``--foundation``: name -> (label, overrides
# (CACHE: the feature cache's folder), compile mode)
TRAINING_PATHS = {
    "no_cache": ("no cache", ["backbone_cache=null", "data.keep_in_memory=false"], "eager"),
    "cache": ("feature cache", ["backbone_cache=CACHE", "data.keep_in_memory=false"], "eager"),
    "in_memory": ("feature cache + frames in memory", ["backbone_cache=CACHE"], "eager"),
    "compile": ("feature cache + frames in memory + compile", ["backbone_cache=CACHE"], "compile"),
    "head_input_16": (
        "feature cache + frames in memory + head_input_features=16 (another recipe)",
        ["backbone_cache=CACHE", "head_input_features=16"],
        "eager",
    ),
}


def foundation(args):
    """Issue 25's figures: ``{"training": [...], "inference": [...]}``."""
    config = str(ROOT / "configs" / "anisonet_foundation.yaml")
    training, overrides = [], list(args.overrides)
    with tempfile.TemporaryDirectory() as cache:
        # the compile row with --modes compile (the default)
        for name in args.training_paths:
            label, path_overrides, mode = TRAINING_PATHS[name]
            if mode != "eager" and mode not in args.modes:
                continue
            args.overrides = [*overrides, *(o.replace("CACHE", cache) for o in path_overrides)]
            result = _measure_in_subprocess(args, config, "cpu", mode)
            training.append({"path": label, **result})
            print(
                f"training, {label}: {result.get('train_structures_per_s')} structures/s",
                flush=True,
            )
    # the aotinductor lever with --modes aotinductor (the default)
    aot = "aotinductor" in args.modes
    levers = [lever for lever in LEVERS if aot or "aotinductor" not in lever]
    inference = []
    for batch_size, count in ((32, args.infer_batches * 32), (1, args.infer_batches * 4)):
        inference += _levers_in_subprocess(batch_size, count, levers, args.warmup)
        print(levers_table(inference), flush=True)
    return {"training": training, "inference": inference}


def levers_table(rows):
    """Markdown table of the shipped model's inference, lever by lever."""
    lines = ["| batch | path | structures/s | speed-up | max relative change |", "|" + " --- |" * 5]
    base = {}
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['batch_size']} | failed: {r['error'][-80:]} | | | |")
            continue
        base.setdefault(r["batch_size"], r["structures_per_s"])
        speedup = r["structures_per_s"] / base[r["batch_size"]]
        lines.append(
            f"| {r['batch_size']} | {r['lever']} | {r['structures_per_s']:.1f} "
            f"| {speedup:.2f}x | {r['max_rel_diff']:.1e} |"
        )
    return "\n".join(lines) + "\n"


def training_table(rows):
    """Markdown table of the frozen foundation config's training, without and with the cache."""
    lines = [
        "| path | train structures/s | setup (s, cache filled for the training split) |",
        "|" + " --- |" * 3,
    ]
    for r in rows:
        figure = r.get("train_structures_per_s")
        failed = f"failed: {r['error'][-80:]}" if "error" in r else "not measured"
        cells = [
            r["path"],
            failed if figure is None else f"{figure:.1f}",
            str(r.get("setup_s", "")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def table(results):
    """Markdown table of speed results."""
    lines = [
        "| config | device | mode | parameters | train structures/s | inference structures/s "
        "| peak RSS (MB) | peak GPU memory (MB) |",
        "|" + " --- |" * 8,
    ]
    for r in results:
        if "error" in r:
            cells = [r["config"], r["device"], r["compile_mode"], f"failed: {r['error'][-80:]}"]
            cells += [""] * 4
        else:
            config = " ".join([r["config"], *r.get("overrides", [])])
            trainable = r.get("trainable_parameters", r["parameters"])
            batch = r.get("inference_batch_size", 32)
            params = f"{r['parameters']:,}" + (
                f" ({trainable:,} trained)" if trainable != r["parameters"] else ""
            )
            cells = [
                config,
                r["device"],
                r["compile_mode"],
                params,
                "" if r["train_structures_per_s"] is None else f"{r['train_structures_per_s']:.1f}",
                f"{r['inference_structures_per_s']:.1f}"
                + ("" if batch == 32 else f" (batch {batch})"),
                f"{r['peak_rss_mb']:.0f}",
                "" if r["peak_gpu_memory_mb"] is None else f"{r['peak_gpu_memory_mb']:.0f}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configs", nargs="+", default=CONFIGS)
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["eager", "compile", "aotinductor"],
        choices=["eager", "compile", "aotinductor"],
    )
    parser.add_argument("--devices", nargs="+", help="default: cpu, and cuda when present")
    parser.add_argument("--train-batches", type=int, default=40, help="timed training steps")
    parser.add_argument("--infer-batches", type=int, default=15, help="timed inference batches")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches before timing")
    parser.add_argument(
        "--infer-batch-size",
        type=int,
        default=32,
        help="structures per inference batch (1: one at a time)",
    )
    parser.add_argument("--out", help="JSON file for the figures (and the machine)")
    parser.add_argument(
        "--foundation",
        action="store_true",
        help="issue 25's side-by-side figures of the frozen foundation config "
        "and the shipped model (today's path and the new one)",
    )
    parser.add_argument(
        "--training-paths",
        nargs="*",
        choices=list(TRAINING_PATHS),
        default=list(TRAINING_PATHS),
        help="with --foundation: the training paths to measure (default: all; none: the "
        "inference levers only)",
    )
    parser.add_argument(
        "--one", nargs=3, metavar=("CONFIG", "DEVICE", "MODE"), help=argparse.SUPPRESS
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. l_max=2")
    args = parser.parse_intermixed_args(argv)

    if args.one:
        config, device, mode = args.one
        figures = measure(
            config,
            device,
            mode,
            args.overrides,
            args.train_batches,
            args.infer_batches,
            args.warmup,
            args.infer_batch_size,
        )
        print(json.dumps(figures))
        return
    if args.foundation:
        figures = {"machine": describe(), "foundation": foundation(args)}
        print("\n" + training_table(figures["foundation"]["training"]))
        print(levers_table(figures["foundation"]["inference"]))
        if args.out:
            with atomic_file(args.out, force=True) as tmp:
                tmp.write_text(json.dumps(figures))
        return
    devices = args.devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    results, machine = [], describe()
    for device in devices:
        for config in args.configs:
            for mode in args.modes:
                results.append(_measure_in_subprocess(args, str(ROOT / config), device, mode))
                print(table(results[-1:]).splitlines()[-1], flush=True)
                if args.out:  # after each measurement, so an interrupted run keeps its figures
                    with atomic_file(args.out, force=True) as tmp:
                        tmp.write_text(json.dumps({"machine": machine, "results": results}))
    print("\n" + table(results))


if __name__ == "__main__":
    main()
