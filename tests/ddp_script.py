"""Run by test_callbacks.test_ddp_two_processes_match_one: fit + validate with 1 or 2 gloo processes.

Usage: python ddp_script.py DEVICES OUT_JSON CACHE_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import torch
from helpers import TinyContinuousLM, mapping_data, quiet_trainer
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from lightning_contloss import DecoderFactory, DecodingCallback, HNSWDecoder


class Data(L.LightningDataModule):
    """Unshuffled and divisible: rank r gets samples r, r+2, ..., so 2 x 32 per step is the same
    set of samples as 64 in one process, and DistributedSampler pads nothing."""

    def _loader(self, ds: TensorDataset) -> DataLoader[tuple[torch.Tensor, ...]]:
        world, rank = self.trainer.world_size, self.trainer.global_rank
        sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=False)
        return DataLoader(ds, batch_size=64 // world, sampler=sampler)

    def train_dataloader(self) -> DataLoader[tuple[torch.Tensor, ...]]:
        return self._loader(mapping_data(512))

    def val_dataloader(self) -> DataLoader[tuple[torch.Tensor, ...]]:
        return self._loader(mapping_data(128, seed=1))


def main() -> None:
    devices, out, cache = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    torch.set_num_threads(1)
    L.seed_everything(0, verbose=False)
    lm = TinyContinuousLM()
    factory = DecoderFactory("hnsw", ef=64, num_threads=1, cache_dir=cache)
    cb = DecodingCallback(k=5, decoder=factory, recall_sample=0)
    strategy = "ddp" if devices > 1 else "auto"
    trainer = quiet_trainer(
        max_epochs=2, devices=devices, strategy=strategy, callbacks=[cb], use_distributed_sampler=False
    )
    trainer.fit(lm, datamodule=Data())
    assert isinstance(cb.decoder, HNSWDecoder)
    rank_stats = {"build_count": cb.build_count, "from_cache": int(cb.decoder.from_cache)}
    gathered = trainer.strategy.all_gather(torch.tensor([rank_stats["build_count"], rank_stats["from_cache"]]))
    if trainer.is_global_zero:
        stats = gathered.reshape(-1, 2).sum(0)
        result = {k: float(v) for k, v in trainer.callback_metrics.items()}
        result.update(build_count=int(stats[0]), cache_loads=int(stats[1]))
        out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
