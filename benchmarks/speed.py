"""Training and inference throughput of a shipped config on the bundled MP training split.

Prints one JSON object: training structures/s (forward + loss + backward + AdamW step, batches
of the config's ``batch_size``, data loading and neighbour lists included, as in nequip-train),
inference structures/s (batch 32, no gradients), peak resident memory, parameter count and the
torch thread count. Not a test: figures depend on the machine.

    python benchmarks/speed.py                                  # configs/anisonet.yaml, CPU
    python benchmarks/speed.py --config configs/anisonet_scalar.yaml --train-batches 20
    python benchmarks/speed.py --device cuda l_max=2            # trailing Hydra overrides
"""

import argparse
import json
import pathlib
import platform
import resource
import time

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from nequip.data import AtomicDataDict
from nequip.utils.global_state import set_global_state
from omegaconf import OmegaConf

ROOT = pathlib.Path(__file__).resolve().parents[1]


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


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=str(ROOT / "configs" / "anisonet.yaml"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--train-batches", type=int, default=40, help="timed training steps")
    parser.add_argument("--infer-batches", type=int, default=15, help="timed inference batches")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches before timing")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. l_max=2")
    args = parser.parse_args(argv)

    set_global_state()
    device = torch.device(args.device)
    cfg, datamodule, model, loss_fn, optim_cfg = _load(pathlib.Path(args.config), args.overrides)
    model = model.to(device)
    optimizer = instantiate({**optim_cfg, "params": model.parameters()})

    def train_step(batch):
        optimizer.zero_grad(set_to_none=True)
        out = model(batch)
        loss = loss_fn(out, batch)["weighted_sum"]
        loss.backward()
        optimizer.step()
        loss_fn.reset()

    loader = datamodule.train_dataloader()
    model.train()
    for batch in _batches(loader, device, args.warmup):
        train_step(batch)
    _sync(device)
    n_train, start = 0, time.perf_counter()
    for batch in _batches(loader, device, args.train_batches):
        train_step(batch)
        n_train += AtomicDataDict.num_frames(batch)
    _sync(device)
    train_time = time.perf_counter() - start

    infer_loader = torch.utils.data.DataLoader(
        datamodule.train_dataset[0], batch_size=32, collate_fn=AtomicDataDict.batched_from_list
    )
    model.eval()
    with torch.no_grad():
        for batch in _batches(infer_loader, device, 1):
            model(batch)
        _sync(device)
        n_infer, start = 0, time.perf_counter()
        for batch in _batches(infer_loader, device, args.infer_batches):
            model(batch)["dielectric_tensor"]
            n_infer += AtomicDataDict.num_frames(batch)
        _sync(device)
        infer_time = time.perf_counter() - start

    result = {
        "config": str(args.config),
        "overrides": args.overrides,
        "device": str(device),
        "machine": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "batch_size": int(cfg.batch_size),
        "train_structures_per_s": round(n_train / train_time, 2),
        "train_structures_timed": n_train,
        "inference_structures_per_s": round(n_infer / infer_time, 2),
        "inference_structures_timed": n_infer,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)
        result["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
