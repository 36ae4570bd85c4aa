"""Run by test_distributed.py: fit + validate one tiny LM under a strategy; every rank writes what it saw.

Usage: python distributed_script.py STRATEGY DEVICES NUM_NODES OUT_DIR CACHE_DIR [LOSSES]

STRATEGY is ``single`` (one process, the reference), ``ddp``, ``fsdp`` (Lightning's FSDPStrategy,
FSDP1) or ``fsdp2`` (``ModelParallelStrategy`` with ``fully_shard``, FSDP2). ``{node}`` in
CACHE_DIR is replaced by the node rank (a node-local cache folder). LOSSES is ``vmf`` (default),
``cosine`` or both, comma-separated (one fit each, in one process: only for ``single``). With
``vmf``, κ = ‖ê‖ and ``ef=64`` is given; with ``cosine``, ``vmf_ppl`` uses the shared κ̂ and the
decoder factory's ``ef`` tuning decides by rank (rank 0 tunes 24, rank 1 would fall back to exact
search), so a rank that keeps its own decision shows. Rank r writes
``OUT_DIR/LOSS/rank{r}.json``: its own synced metric values (before Lightning averages them across
ranks, so a rank that disagrees shows), its local token count, the index builds and loads, the
decoder and κ̂ it ended with, and how the target table looks after the strategy wrapped the model.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta
from pathlib import Path

import lightning as L
import torch
from ddp_script import Data
from helpers import RankDecidingFactory, TinyContinuousLM, quiet_trainer
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, ModelParallelStrategy, Strategy

from lightning_contloss import DecoderFactory, DecodingCallback, TargetEmbeddings
from lightning_contloss.losses import CosineLoss, VMFLoss

# A hang in a collective fails the run instead of blocking CI.
TIMEOUT = timedelta(seconds=120)


class ShardedLM(TinyContinuousLM):
    """TinyContinuousLM whose body FSDP2 shards (ModelParallelStrategy needs configure_model)."""

    def configure_model(self) -> None:
        from torch.distributed.fsdp import fully_shard

        mesh = self.device_mesh["data_parallel"]
        fully_shard(self.model.mlp, mesh=mesh)
        fully_shard(self.model, mesh=mesh)


def strategy_of(name: str, world_size: int) -> Strategy | str:
    if name == "single":
        return "auto"
    if name == "ddp":
        return DDPStrategy(timeout=TIMEOUT)
    if name == "fsdp":
        return FSDPStrategy(timeout=TIMEOUT)
    if name == "fsdp2":
        return ModelParallelStrategy(data_parallel_size=world_size, tensor_parallel_size=1, timeout=TIMEOUT)
    raise ValueError(f"unknown strategy {name!r}")


def main() -> None:
    name, devices, nodes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    out = Path(sys.argv[4])
    cache = sys.argv[5].replace("{node}", os.environ.get("NODE_RANK", "0"))
    losses = sys.argv[6].split(",") if len(sys.argv) > 6 else ["vmf"]
    torch.set_num_threads(1)
    for loss in losses:
        fit_and_record(name, devices, nodes, loss, out / loss, cache)


def fit_and_record(name: str, devices: int, nodes: int, loss: str, out: Path, cache: str) -> None:
    L.seed_everything(0, verbose=False)
    # vMF: κ = ‖ê‖, so vmf_ppl is the same sum over tokens however they are split across ranks.
    # Cosine: vmf_ppl uses κ̂, fitted on 512 tokens from all ranks: the one-process run's first 512.
    targets = TargetEmbeddings.random(200, 16, seed=0)
    loss_fn = VMFLoss() if loss == "vmf" else CosineLoss()
    lm = (ShardedLM if name == "fsdp2" else TinyContinuousLM)(targets=targets, loss=loss_fn)
    factory = (
        DecoderFactory("hnsw", ef=64, M=8, num_threads=1, cache_dir=cache)
        if loss == "vmf"
        else RankDecidingFactory({0: 24, 1: "exact"}, cache_dir=cache)
    )
    cb = DecodingCallback(k=5, decoder=factory, recall_sample=0)
    trainer = quiet_trainer(
        max_epochs=1,
        devices=devices,
        num_nodes=nodes,
        strategy=strategy_of(name, devices * nodes),
        callbacks=[cb],
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(lm, datamodule=Data())
    # compute() returns the values cached at the epoch's end (synced across ranks): no new collective.
    values = {f"val/{k}": float(v) for k, v in cb.epoch_values().items() if k != "decode_qps"}
    values["val/loss"] = float(trainer.callback_metrics["val/loss"])
    weight = lm.continuous_targets.weight
    record = {
        "values": values,
        "local_tokens": int(cb.metrics["acc@1"].total),
        "build_count": cb.build_count,
        "from_cache": getattr(cb.decoder, "from_cache", None),
        "decoder": type(cb.decoder).__name__,
        "ef": getattr(cb.decoder, "ef", None),
        "factory_state": cb.factory.state_dict(),
        "own_decisions": getattr(cb.factory, "decided", None),
        "kappa": cb.kappa.fitted,
        "table_type": type(weight).__name__,
        "table_shape": list(weight.shape),
        "table_equal": bool(torch.equal(weight.cpu(), TargetEmbeddings.random(200, 16, seed=0).weight)),
        "loss_sees_table": lm.continuous_loss_fn.targets is lm.continuous_targets,
        "sharded_params": sorted(n for n, p in lm.named_parameters() if type(p).__name__ == "DTensor"),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main()
