"""The generator-training job (``workflow.train_generator``): defaults, checks, the learning-rate
tail, a tiny run through the job and the CLI's refusal to overwrite a model."""

from __future__ import annotations

import math

import pytest

from napari_synthseg.errors import SynthsegError
from napari_synthseg.generator import GeneratorTrainConfig
from napari_synthseg.generator.train import learning_rate
from napari_synthseg.models import read_model_info
from napari_synthseg.workflow.train_generator import (
    TrainGeneratorSettings,
    check_generator_training,
    model_summary,
    train_generator_model,
)


def test_settings_defaults_match_the_core_and_refuse_bad_values():
    d = TrainGeneratorSettings()
    core = GeneratorTrainConfig()
    tc = d.train_config()
    for name in ("steps", "batch", "lr", "lr_tail", "ema_decay", "healthy_prob", "crop", "checkpoint_every"):
        assert getattr(tc, name) == getattr(core, name), name
    assert d.model_config().channels == (8, 16, 32)  # the shipped model's width
    assert TrainGeneratorSettings(network="tiny").model_config().channels == (8, 8, 16)
    assert TrainGeneratorSettings(channels=(16, 32)).network_channels == (16, 32)
    for bad in ({"steps": 0}, {"lr_tail": 1.5}, {"network": "huge"}, {"channels": (12, 24)}, {"patch": 30},
                {"crop": 40}, {"healthy_prob": -0.1}, {"limit": -1}, {"channels": (8, 8, 8, 8, 8, 8), "patch": 16}):
        with pytest.raises(SynthsegError):
            TrainGeneratorSettings(**bad)


def test_learning_rate_tail_is_a_half_cosine_from_the_runs_start():
    constant = GeneratorTrainConfig(steps=1000, lr=1e-3, warmup=50)
    assert learning_rate(constant, 0) == pytest.approx(1e-3 / 50)
    assert learning_rate(constant, 999) == pytest.approx(1e-3)
    tail = GeneratorTrainConfig(steps=1000, lr=1e-3, warmup=50, lr_tail=0.1)
    # a run resumed at step 600 decays over its own 400 steps, without a new warm-up
    assert learning_rate(tail, 600, start_step=600) == pytest.approx(1e-3)
    assert learning_rate(tail, 800, start_step=600) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert learning_rate(tail, 1000, start_step=600) == pytest.approx(1e-4)
    rates = [learning_rate(tail, s, start_step=600) for s in range(600, 1001, 50)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))
    assert not any(math.isnan(r) for r in rates)


def test_checks_refuse_before_anything_is_loaded(lidc, tmp_path):
    with pytest.raises(SynthsegError, match="library folder"):
        check_generator_training("", tmp_path / "m.safetensors")
    with pytest.raises(SynthsegError, match="not found"):
        check_generator_training(tmp_path / "nowhere", tmp_path / "m.safetensors")
    with pytest.raises(SynthsegError, match="index.csv"):
        check_generator_training(tmp_path, tmp_path / "m.safetensors")
    with pytest.raises(SynthsegError, match=r"\.safetensors"):
        check_generator_training(lidc, tmp_path / "m.pt")
    with pytest.raises(SynthsegError, match="does not exist"):
        check_generator_training(lidc, tmp_path / "no" / "m.safetensors")
    with pytest.raises(SynthsegError, match="cannot resume"):
        check_generator_training(lidc, tmp_path / "m.safetensors", resume=True)
    existing = tmp_path / "old.safetensors"
    existing.write_bytes(b"x")
    with pytest.raises(SynthsegError, match="already exists"):
        check_generator_training(lidc, existing)
    check_generator_training(lidc, existing, replace=True)
    check_generator_training(lidc, tmp_path / "new.safetensors")


def test_job_trains_resumes_and_summarises_a_tiny_model(lidc, tmp_path):
    out = tmp_path / "tiny.safetensors"
    settings = TrainGeneratorSettings(steps=2, batch=2, network="tiny", patch=16, limit=12, threads=1,
                                      checkpoint_every=0, lr_tail=0.1)
    seen = []
    assert train_generator_model(lidc, out, settings, progress=lambda s, t, m: seen.append(m)) == out
    assert any(m.startswith("loss") for m in seen)
    prov = read_model_info(out)["provenance"]
    assert prov["steps"] == 2 and prov["train_config"]["lr_tail"] == 0.1
    assert read_model_info(out)["config"]["channels"] == [8, 8, 16]
    train_generator_model(lidc, out, settings.replace(steps=3), resume=True)
    assert read_model_info(out)["provenance"]["steps"] == 3
    summary = model_summary(out)
    assert "tiny.safetensors: 3 steps" in summary and "resumable" in summary and "train-side nodules" in summary
    with pytest.raises(SynthsegError, match="already exists"):
        train_generator_model(lidc, out, settings)


def test_cli_refuses_to_overwrite_a_model_without_force(lidc, tmp_path, capsys):
    from napari_synthseg.cli import main

    out = tmp_path / "cli.safetensors"
    args = ["train-lesion-generator", "--library", str(lidc), "--out", str(out), "--steps", "1", "--batch", "2",
            "--patch", "16", "--network", "tiny", "--limit", "12", "--threads", "1", "--lr-tail", "0.5"]
    assert main(args) == 0
    assert "1 steps" in capsys.readouterr().out
    assert main(args) == 2  # one line, exit 2: the model is not overwritten
    assert "already exists" in capsys.readouterr().err
    assert main(args + ["--force"]) == 0
    assert main(args[:-2] + ["--lr-tail", "2"]) == 2  # out of range
