"""The callback and the losses under DDP and FSDP on 2 CPU processes (gloo), against one process.

Each run is ``distributed_script.py`` in a fresh process group; every rank writes its own synced
metric values, so a rank that disagrees, or a metric summed twice (a local token count that is
not half of the data's), fails the test. A run that hangs is killed with its children.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
SCRIPT = HERE / "distributed_script.py"
RUN_TIMEOUT = 420
# ddp_script.Data's validation set: 128 sequences of 8 tokens.
VAL_TOKENS = 128 * 8
COMPARED = (
    *("val/acc@1", "val/acc@5", "val/mean_cos", "val/distinct_pred", "val/top_pred_share", "val/vmf_ppl"),
    "val/loss",
)
# Lightning's refusal of FSDPStrategy on a CPU (lightning 2.6), the known limitation the FSDP1 test skips on.
FSDP1_CPU_REFUSAL = "requires a GPU accelerator"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    # The package under test, not whichever copy is installed (the script's folder is tests/).
    path = os.pathsep.join(p for p in (str(HERE.parent), os.environ.get("PYTHONPATH", "")) if p)
    # Own session, so a timeout kills the ranks Lightning spawned too.
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        cwd=HERE,
        env={**os.environ, "PYTHONPATH": path, **(env or {})},
        start_new_session=True,
    )


def wait_all(procs: list[subprocess.Popen[bytes]]) -> None:
    try:
        for proc in procs:
            assert proc.wait(timeout=RUN_TIMEOUT) == 0, f"{proc.args} exited with {proc.returncode}"
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def run(
    strategy: str, out: Path, cache: Path, devices: int = 1, nodes: int = 1, losses: tuple[str, ...] = ("vmf",)
) -> dict[str, list[dict[str, Any]]]:
    """Run the script (one process per node; Lightning spawns the other local ranks); every rank's record per loss."""
    port = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    args = [strategy, str(devices), str(nodes), str(out), str(cache), ",".join(losses)]
    procs = [launch(args, {**port, "NODE_RANK": str(node)}) for node in range(nodes)]
    wait_all(procs)
    return {
        loss: [json.loads((out / loss / f"rank{r}.json").read_text()) for r in range(devices * nodes)]
        for loss in losses
    }


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The one-process records, of the vMF and of the cosine model (two fits, one process)."""
    tmp = tmp_path_factory.mktemp("single")
    records = run("single", tmp / "out", tmp / "cache", losses=("vmf", "cosine"))
    for (record,) in records.values():
        assert record["local_tokens"] == VAL_TOKENS
    return {loss: record for loss, (record,) in records.items()}


@pytest.fixture(scope="module")
def reference(single: dict[str, dict[str, Any]]) -> dict[str, float]:
    values: dict[str, float] = single["vmf"]["values"]
    return values


def check_ranks(records: list[dict[str, Any]], reference: dict[str, float]) -> None:
    # Each rank saw its half of the data (the states were not summed into the local ones) ...
    assert sum(r["local_tokens"] for r in records) == VAL_TOKENS
    assert all(r["local_tokens"] == VAL_TOKENS // len(records) for r in records)
    for key in COMPARED:
        # ... and every rank computed the one-process value from the synced sums.
        for rank, r in enumerate(records):
            assert r["values"][key] == pytest.approx(reference[key], rel=1e-4, abs=1e-5), (key, rank)
    for r in records:
        # The target table is a buffer: never sharded, every rank keeps it whole, the loss reads that one.
        assert r["table_type"] == "Tensor" and r["table_shape"] == [200, 16] and r["table_equal"]
        assert r["loss_sees_table"]


@pytest.mark.slow
def test_ddp_two_processes_match_one_and_build_once(tmp_path: Path, single: dict[str, dict[str, Any]]) -> None:
    """A cosine model: each rank's own ef tuning would decide differently (rank 0 ef=24, rank 1 exact search).

    Every rank ends with rank 0's decision, made by rank 0 alone, and with one κ̂: fitted on each
    rank's first 256 tokens, which here are the one-process run's first 512, so κ̂ and vmf_ppl
    equal the one-process values.
    """
    (records,) = run("ddp", tmp_path / "out", tmp_path / "cache", devices=2, losses=("cosine",)).values()
    reference = single["cosine"]
    check_ranks(records, reference["values"])
    assert [(r["build_count"], r["from_cache"]) for r in records] == [(1, False), (0, True)]
    assert reference["decoder"] == "HNSWDecoder" and reference["ef"] == 24 and reference["own_decisions"] == 1
    for r in records:
        assert (r["decoder"], r["ef"]) == ("HNSWDecoder", 24)
        assert r["factory_state"] == {"tuned_ef": 24, "exact_fallback": False, "screened": False}
    assert [r["own_decisions"] for r in records] == [1, 0]
    assert records[0]["kappa"] == records[1]["kappa"] > 0
    assert records[0]["kappa"] == pytest.approx(reference["kappa"], rel=1e-5)


@pytest.mark.slow
def test_fsdp2_two_processes_match_one(tmp_path: Path, reference: dict[str, float]) -> None:
    """FSDP2 (ModelParallelStrategy + fully_shard) runs on CPU with gloo; the body is sharded, the table is not."""
    (records,) = run("fsdp2", tmp_path / "out", tmp_path / "cache", devices=2).values()
    check_ranks(records, reference)
    for r in records:
        assert "model.mlp.0.weight" in r["sharded_params"]
    assert [(r["build_count"], r["from_cache"]) for r in records] == [(1, False), (0, True)]


@pytest.mark.slow
def test_two_nodes_with_node_local_caches_build_once_per_node(tmp_path: Path, reference: dict[str, float]) -> None:
    """num_nodes=2, one process each, each with its own cache folder: each node's local rank 0 builds."""
    (records,) = run("ddp", tmp_path / "out", tmp_path / "cache-node{node}", devices=1, nodes=2).values()
    check_ranks(records, reference)
    assert [(r["build_count"], r["from_cache"]) for r in records] == [(1, False), (1, False)]
    assert (tmp_path / "cache-node0").is_dir() and (tmp_path / "cache-node1").is_dir()


def test_fsdp1_strategy_on_cpu(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Lightning's FSDPStrategy (FSDP1) refuses a CPU accelerator; once it accepts one, the 2-process check runs."""
    import lightning as L

    try:
        L.Trainer(accelerator="cpu", devices=2, strategy="fsdp", logger=False)
    except ValueError as err:
        if FSDP1_CPU_REFUSAL not in str(err):
            raise
        # torch's FSDP1 refuses a CPU device too ("FSDP needs a non-CPU accelerator device"): GPU only,
        # see benchmarks/gpu.py.
        pytest.skip(f"FSDP1 needs a GPU: {err}")
    (records,) = run("fsdp", tmp_path / "out", tmp_path / "cache", devices=2).values()
    check_ranks(records, request.getfixturevalue("reference"))


def test_two_nodes_of_two_ranks_build_once_per_node(tmp_path: Path) -> None:
    """4 ranks (2 nodes x 2), node-local folders, as threads meeting one real barrier: 2 builds, not 3.

    Before the per-node step, both ranks of node 1 missed their node's folder after the first
    barrier and built at once.
    """
    import threading
    from types import SimpleNamespace

    from lightning_contloss import DecoderFactory, DecodingCallback, TargetEmbeddings

    targets = TargetEmbeddings.random(300, 8, seed=0)
    barrier = threading.Barrier(4, timeout=60)
    built: dict[int, bool] = {}

    def rank(global_rank: int) -> None:
        node, local = divmod(global_rank, 2)
        factory = DecoderFactory("hnsw", ef=16, M=8, num_threads=1, cache_dir=tmp_path / f"node{node}")
        trainer = SimpleNamespace(
            world_size=4,
            is_global_zero=global_rank == 0,
            local_rank=local,
            strategy=SimpleNamespace(barrier=lambda name=None: barrier.wait()),
        )
        decoder = DecodingCallback(decoder=factory).session.build_once(trainer, targets, "cosine")  # type: ignore[arg-type]
        built[global_rank] = not decoder.from_cache  # type: ignore[attr-defined]

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert built == {0: True, 1: False, 2: True, 3: False}


class ThreadGroup:
    """A process group of threads: all_gather and broadcast meet at a real barrier; each rank logs its collectives."""

    def __init__(self, world: int) -> None:
        import threading

        self.world = world
        self.barrier = threading.Barrier(world, timeout=30)
        self.slots: list[Any] = [None] * world
        self.calls: list[list[str]] = [[] for _ in range(world)]

    def strategy(self, rank: int) -> Any:
        group = self

        class Strategy:
            def barrier(self, name: str | None = None) -> None:
                group.calls[rank].append("barrier")
                group.barrier.wait()

            def all_gather(self, tensor: Any) -> Any:
                import torch

                group.calls[rank].append(f"all_gather{list(tensor.shape)}")
                group.slots[rank] = tensor.clone()
                group.barrier.wait()
                out = torch.stack(group.slots)
                group.barrier.wait()
                return out

            def broadcast(self, obj: Any, src: int = 0) -> Any:
                import copy

                group.calls[rank].append("broadcast")
                if rank == src:
                    group.slots[src] = obj
                group.barrier.wait()
                out = copy.deepcopy(group.slots[src])
                group.barrier.wait()
                return out

        return Strategy()

    def trainer(self, rank: int) -> Any:
        from types import SimpleNamespace

        return SimpleNamespace(
            world_size=self.world, global_rank=rank, local_rank=rank, is_global_zero=rank == 0,
            strategy=self.strategy(rank), datamodule=None,
        )


def run_ranks(world: int, body: Any) -> None:
    """Run ``body(rank)`` on ``world`` threads; re-raise the first failure."""
    import threading

    errors: list[BaseException] = []

    def target(rank: int) -> None:
        try:
            body(rank)
        except BaseException as err:  # re-raised in the test's thread
            errors.append(err)

    threads = [threading.Thread(target=target, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a rank hung in a collective"
    if errors:
        raise errors[0]


def rank_batches(rank: int, world: int = 2, batches: int = 2) -> list[tuple[Any, Any]]:
    """Rank ``rank``'s validation batches of ``ddp_script.Data``: samples rank, rank+world, ..., 64 // world a batch."""
    from helpers import mapping_data

    x, y = mapping_data(128, seed=1).tensors
    x, y = x[rank::world], y[rank::world]
    size = 64 // world
    return [(x[i * size : (i + 1) * size], y[i * size : (i + 1) * size]) for i in range(batches)]


@pytest.mark.parametrize("decisions", [{0: 24, 1: "exact"}, {0: "exact", 1: 24}])
def test_ranks_take_rank_zeros_ef_decision_and_one_kappa(decisions: dict[int, int | str]) -> None:
    """Each rank's own adapt would decide differently; every rank ends with rank 0's, and one κ̂ of 512 tokens.

    κ̂ is fitted on each rank's first 256 tokens together, which with this interleaving sampler
    are the one-process run's first 512 tokens: it equals fit_kappa on those.
    """
    import torch
    from helpers import RankDecidingFactory, TinyContinuousLM

    from lightning_contloss import DecodingCallback, ExactDecoder, HNSWDecoder, TargetEmbeddings
    from lightning_contloss.functional import fit_kappa

    group = ThreadGroup(2)
    torch.manual_seed(0)
    lm = TinyContinuousLM(targets=TargetEmbeddings.random(200, 16, seed=0))
    modules = [lm, copy_module(lm)]
    callbacks = [DecodingCallback(k=5, decoder=RankDecidingFactory(decisions, rank=r)) for r in range(2)]

    validate_two_batches(group, modules, callbacks)
    # One exchange, at the first batch, the same collectives in the same order on both ranks.
    assert group.calls[0] == group.calls[1] == ["all_gather[256, 16]", "all_gather[256]", "broadcast"]
    assert [cb.factory.decided for cb in callbacks] == [1, 0]
    if decisions[0] == "exact":
        assert all(isinstance(cb.decoder, ExactDecoder) for cb in callbacks)
        expected = {"tuned_ef": None, "exact_fallback": True, "screened": False}
        assert [cb.factory.state_dict() for cb in callbacks] == [expected] * 2
    else:
        assert all(isinstance(cb.decoder, HNSWDecoder) and cb.decoder.ef == 24 for cb in callbacks)
        expected = {"tuned_ef": 24, "exact_fallback": False, "screened": False}
        assert [cb.factory.state_dict() for cb in callbacks] == [expected] * 2
    kappas = [cb.kappa.fitted for cb in callbacks]
    assert kappas[0] == kappas[1] and kappas[0] is not None and kappas[0] > 0
    assert [cb.metrics["vmf_ppl"].kappa for cb in callbacks] == kappas
    x, y = first_tokens(512)
    pred = correlated_pred(lm, x, y)
    one_process = fit_kappa(pred.reshape(-1, 16), y.reshape(-1), lm.continuous_targets.weight)
    assert kappas[0] == pytest.approx(one_process, rel=1e-5)


def correlated_pred(module: Any, x: Any, y: Any) -> Any:
    """Predictions near their targets (an untrained model's are not, and fit κ̂ = 0): ``e_y + 0.7·e_x``."""
    weight = module.continuous_targets.weight
    return weight[y] + 0.7 * weight[x]


def validate_two_batches(group: ThreadGroup, modules: list[Any], callbacks: list[Any]) -> None:
    """Each rank (a thread): start a validation, hand over its 2 first batches, flush."""

    def rank(r: int) -> None:
        trainer, module, cb = group.trainer(r), modules[r], callbacks[r]
        cb.on_validation_start(trainer, module)
        feed(cb, trainer, module, rank_batches(r))
        cb._flush(trainer, module)

    run_ranks(2, rank)


def feed(cb: Any, trainer: Any, module: Any, batches: list[tuple[Any, Any]]) -> None:
    """Hand ``batches`` to the callback as validation steps returning ``correlated_pred``."""
    for i, (x, y) in enumerate(batches):
        cb.on_validation_batch_end(trainer, module, {"pred": correlated_pred(module, x, y), "target": y}, (x, y), i)


def copy_module(module: Any) -> Any:
    import copy

    return copy.deepcopy(module)


def first_tokens(tokens: int) -> tuple[Any, Any]:
    """The one-process run's first ``tokens`` tokens of ddp_script.Data's validation set (sequences of 8)."""
    from helpers import mapping_data

    x, y = mapping_data(128, seed=1).tensors
    return x[: tokens // 8], y[: tokens // 8]


def test_a_rank_without_batches_joins_the_exchange_at_the_epoch_end() -> None:
    """Rank 1 has no validation batch: it meets rank 0's first-batch exchange at its epoch end, and hangs nobody."""
    from helpers import RankDecidingFactory, TinyContinuousLM

    from lightning_contloss import DecodingCallback, HNSWDecoder, TargetEmbeddings

    group = ThreadGroup(2)
    lm = TinyContinuousLM(targets=TargetEmbeddings.random(200, 16, seed=0))
    modules = [lm, copy_module(lm)]
    callbacks = [DecodingCallback(k=5, decoder=RankDecidingFactory({0: 24, 1: "exact"}, rank=r)) for r in range(2)]

    def rank(r: int) -> None:
        trainer, module, cb = group.trainer(r), modules[r], callbacks[r]
        cb.on_validation_start(trainer, module)  # type: ignore[arg-type]
        if r == 0:
            feed(cb, trainer, module, rank_batches(0, batches=1))
        else:
            cb.on_validation_epoch_end(trainer, module)  # type: ignore[arg-type]

    run_ranks(2, rank)
    assert group.calls[0] == group.calls[1] == ["all_gather[256, 16]", "all_gather[256]", "broadcast"]
    assert all(isinstance(cb.decoder, HNSWDecoder) and cb.decoder.ef == 24 for cb in callbacks)
    # Rank 1 gave only padding: κ̂ is rank 0's 256 tokens' fit, the same on both.
    assert callbacks[0].kappa.fitted == callbacks[1].kappa.fitted and callbacks[0].kappa.fitted


def test_a_restored_decision_needs_no_collective() -> None:
    """A checkpoint's tuned ef (for this table), a vMF loss (no κ̂) and no re-ranking: nothing to exchange."""
    from helpers import RankDecidingFactory, TinyContinuousLM

    from lightning_contloss import DecodingCallback, HNSWDecoder, TargetEmbeddings
    from lightning_contloss.losses import VMFLoss

    targets = TargetEmbeddings.random(200, 16, seed=0)
    state = {"tuned_ef": 40, "exact_fallback": False, "tuned_for": targets.content_hash()}
    group = ThreadGroup(2)
    modules = [TinyContinuousLM(targets=targets, loss=VMFLoss()) for _ in range(2)]
    callbacks = [DecodingCallback(k=5, decoder=RankDecidingFactory({0: 24, 1: 32}, rank=r)) for r in range(2)]
    for cb in callbacks:
        cb.load_state_dict(state)

    validate_two_batches(group, modules, callbacks)
    assert group.calls == [[], []]
    assert all(isinstance(cb.decoder, HNSWDecoder) and cb.decoder.ef == 40 for cb in callbacks)
    assert [cb.factory.decided for cb in callbacks] == [0, 0]
