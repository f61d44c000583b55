"""Training and evaluation under torchrun (Gloo on CPU), against single-process runs.

The torchrun tests start real launcher processes (``python -m torch.distributed.run``) with two
workers of one thread each, on tiny synthetic recipes.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from semseg.checkpoint import Checkpoint, CheckpointError
from semseg.cli import main
from semseg.config import load_recipe
from semseg.engine import distributed
from semseg.engine.build import build_dataset
from semseg.engine.evaluate import evaluate
from semseg.engine.trainer import Trainer
from semseg.inference.predictor import Predictor

# No BatchNorm and no ignored pixels (crop = image, scale 1), so the gradient averaged over two
# processes of batch 2 is the gradient of one batch of 4; SGD keeps rounding differences small.
# 16 images / (2 processes x 2) = 4 steps per epoch; 5 validation images split 3 + 2.
RECIPE = {
    "seed": 3,
    "data": {
        "format": "synthetic",
        "synthetic_train_size": 16,
        "synthetic_val_size": 5,
        "synthetic_image_size": [32, 40],
    },
    "augment": {"crop_size": [32, 40], "scale_range": [1.0, 1.0], "hflip": True},
    "model": {"name": "encoder_decoder", "widths": [4, 8], "convs_per_stage": 1,
              "batch_norm": False},
    "train": {"epochs": 2, "batch_size": 2, "optimizer": "sgd", "lr": 0.05, "threads": 1,
              "warmup_steps": 1, "freeze_encoder_epochs": 1, "checkpoint_every": 1},
}  # fmt: skip
STEPS = 2 * 16 // (2 * 2)
TIMEOUT_S = 30  # SEMSEG_DIST_TIMEOUT of the workers; a run that hangs fails the test
STANDALONE = ["--standalone", "--nproc_per_node=2"]  # one machine, a free port chosen by torchrun


def _environment(timeout_s: float = TIMEOUT_S) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", distributed.TIMEOUT_ENV: str(timeout_s)}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _torchrun(launcher: list[str], command: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *launcher, "-m", "semseg", *command]


def _run(arguments: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        arguments, env=_environment(), capture_output=True, text=True, timeout=timeout
    )


def _workers(launcher: subprocess.Popen) -> dict[int, int]:
    """Rank -> process id of the launcher's workers (from Linux /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            status = (entry / "status").read_text()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:  # not a process, gone, or not ours
            continue
        if f"PPid:\t{launcher.pid}\n" in status:
            ranks = [int(item[5:]) for item in environ if item.startswith(b"RANK=")]
            found.update(dict.fromkeys(ranks, int(entry.name)))
    return found


@contextmanager
def _launched(arguments: list[str], timeout_s: float = TIMEOUT_S) -> Iterator[subprocess.Popen]:
    """A started launcher; whatever is left of it (workers included) is killed at the end."""
    launcher = subprocess.Popen(
        arguments,
        env=_environment(timeout_s),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield launcher
    finally:
        if launcher.poll() is None:
            for worker in _workers(launcher).values():  # in sessions of their own
                os.kill(worker, signal.SIGKILL)
            launcher.kill()
            launcher.communicate()


def _write_recipe(folder: Path, **train: object) -> Path:
    data = {**RECIPE, "train": {**RECIPE["train"], **train}}
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _weights(out_dir: Path) -> dict[str, torch.Tensor]:
    return Checkpoint.load(out_dir / "last.pt").state_dict


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory) -> Path:
    """An uninterrupted two-process run of RECIPE (batch 2 per process)."""
    folder = tmp_path_factory.mktemp("ddp")
    recipe = _write_recipe(folder)
    out = folder / "run"
    result = _run(_torchrun(STANDALONE, ["train", "--recipe", str(recipe), "--out", str(out)]))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("run folder:") == 1  # rank 0 alone prints
    return out


def test_shard_hands_out_every_item_once():
    assert distributed.shard(list(range(5)), 0, 2) == [0, 2, 4]
    assert distributed.shard(list(range(5)), 1, 2) == [1, 3]
    assert list(distributed.shard(range(7), 2, 3)) == [2, 5]
    assert distributed.shard([4, 1, 3], 0, 1) == [4, 1, 3]
    with pytest.raises(ValueError, match="rank 2 is outside 0..1"):
        distributed.shard([1, 2], 2, 2)


def test_timeout_and_launch_variables_are_checked(monkeypatch):
    monkeypatch.delenv(distributed.TIMEOUT_ENV, raising=False)
    assert distributed.timeout_from_env() == timedelta(minutes=10)
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "2.5")
    assert distributed.timeout_from_env() == timedelta(seconds=2.5)
    for bad in ("0", "-3", "soon", "inf"):
        monkeypatch.setenv(distributed.TIMEOUT_ENV, bad)
        with pytest.raises(distributed.LaunchError, match=f"SEMSEG_DIST_TIMEOUT='{bad}'"):
            distributed.timeout_from_env()
    monkeypatch.delenv(distributed.TIMEOUT_ENV)

    for name in distributed.LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert distributed.launch_from_env() is None
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(distributed.LaunchError, match="LOCAL_RANK, MASTER_ADDR, MASTER_PORT"):
        distributed.launch_from_env()
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    assert distributed.launch_from_env() == distributed.Launch(1, 1, 2)
    refused = pytest.raises(distributed.LaunchError, match="--device cuda:1: under torchrun")
    with refused, distributed.process_group("cuda:1"):
        pass
    if torch.cuda.device_count() < 2:
        missing = pytest.raises(distributed.LaunchError, match="LOCAL_RANK=1 but this machine")
        with missing, distributed.process_group("cuda"):
            pass
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(distributed.LaunchError, match="RANK=2 is not below WORLD_SIZE=2"):
        distributed.launch_from_env()


def test_without_torchrun_there_is_one_process_and_no_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with distributed.process_group("cpu") as device:
        assert device == torch.device("cpu")
        assert not torch.distributed.is_initialized()
        assert (distributed.get_rank(), distributed.get_world_size()) == (0, 1)


def _tiny(tmp_path: Path, **train: object) -> Trainer:
    data = {**RECIPE, "train": {**RECIPE["train"], "epochs": 1, "freeze_encoder_epochs": 0,
                                "checkpoint_every": 0, **train}}  # fmt: skip
    return Trainer(load_recipe(None, base=data), tmp_path, progress=False)


def test_sync_batchnorm_on_cpu_is_refused_at_start(tmp_path):
    with pytest.raises(ValueError, match="train.sync_batchnorm needs CUDA devices"):
        _tiny(tmp_path, sync_batchnorm=True)
    assert not tmp_path.joinpath("last.pt").exists()


def test_bf16_autocast_changes_the_training_result(tmp_path):
    reference = _tiny(tmp_path / "fp32")
    reference.fit()
    bf16 = _tiny(tmp_path / "bf16", precision="bf16")
    bf16.fit()
    assert bf16.scaler is None
    expected, actual = _weights(tmp_path / "fp32"), _weights(tmp_path / "bf16")
    # bfloat16 keeps 8 mantissa bits: the weights differ, but only slightly
    assert any(not torch.equal(expected[k], actual[k]) for k in expected)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0.05, atol=0.01)


def test_fp16_grad_scaler_state_is_checkpointed_and_restored(tmp_path):
    with pytest.warns(UserWarning, match="fp16"):
        trainer = _tiny(tmp_path, precision="fp16")
    trainer.fit()
    checkpoint = Checkpoint.load(tmp_path / "last.pt")
    saved = checkpoint.training["grad_scaler"]
    assert saved["scale"] == trainer.scaler.get_scale()
    assert saved["_growth_tracker"] == trainer.state["global_step"]  # steps since an overflow
    saved["scale"] = 1024.0
    checkpoint.save(tmp_path / "last.pt")
    with pytest.warns(UserWarning, match="fp16"):
        resumed = Trainer(trainer.recipe, tmp_path, resume=True)
    assert resumed.scaler.get_scale() == 1024.0


def test_resume_refuses_a_checkpoint_of_another_process_count(tmp_path):
    trainer = _tiny(tmp_path)
    trainer.fit()
    checkpoint = Checkpoint.load(tmp_path / "last.pt")
    assert checkpoint.training["world_size"] == 1
    checkpoint.training["world_size"] = 2
    checkpoint.save(tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match="written by 2 process"):
        Trainer(trainer.recipe, tmp_path, resume=True)


def test_two_processes_train_like_one_with_the_global_batch(two_process_run, tmp_path):
    single_batch = load_recipe(None, base={**RECIPE, "train": {**RECIPE["train"], "batch_size": 4}})
    single = Trainer(single_batch, tmp_path, progress=False)
    initial = {k: v.clone() for k, v in single.model.state_dict().items()}
    single.fit()

    distributed_weights, single_weights = _weights(two_process_run), _weights(tmp_path)
    assert distributed_weights.keys() == single_weights.keys()
    for name, expected in single_weights.items():
        # float32 sums in another order (AVX-512 kernels of an AMD EPYC left 2.5e-6 on a
        # BatchNorm bias): the difference stays under 2% of how far training moved the tensor
        moved = (expected - initial[name]).abs().max().item()
        assert moved > 1e-5, f"{name} did not train"
        difference = (distributed_weights[name] - expected).abs().max().item()
        assert difference <= 0.02 * moved, f"{name}: {difference:.2e} against moved {moved:.2e}"
        torch.testing.assert_close(distributed_weights[name], expected, rtol=1e-4, atol=1e-5)
    ddp_log = Checkpoint.load(two_process_run / "last.pt").training
    single_log = Checkpoint.load(tmp_path / "last.pt").training
    assert ddp_log["global_step"] == single_log["global_step"] == STEPS
    assert ddp_log["world_size"] == 2
    # the logged loss is the mean over the processes: the loss of the global batch
    assert [r["train_loss"] for r in ddp_log["history"]] == pytest.approx(
        [r["train_loss"] for r in single_log["history"]], rel=1e-5
    )


def test_sharded_validation_scores_the_checkpointed_model(two_process_run):
    """The last epoch's validation (5 images split 3 + 2 over the processes) equals scoring
    the saved weights in one process."""
    predictor = Predictor.from_checkpoint(two_process_run / "last.pt", "cpu")
    val_set = build_dataset(load_recipe(None, base=RECIPE).data, "val")
    expected = evaluate(predictor, val_set).to_dict(val_set.labels)
    logged = [json.loads(line) for line in (two_process_run / "metrics.jsonl").open()][-1]["val"]
    assert logged["per_class_iou"] == expected["per_class_iou"]
    assert logged["miou"] == expected["miou"]
    assert logged["boundary_f1"] == pytest.approx(expected["boundary_f1"], rel=1e-12)


def test_evaluate_under_torchrun_equals_one_process(two_process_run, tmp_path):
    checkpoint = str(two_process_run / "last.pt")
    single, sharded = tmp_path / "single.json", tmp_path / "sharded.json"
    engine = ["--backend", "torch", "--precision", "fp32"]  # auto may choose per process
    result = CliRunner().invoke(main, ["evaluate", "--checkpoint", checkpoint,
                                       "--json", str(single), *engine])  # fmt: skip
    assert result.exit_code == 0, result.output
    command = ["evaluate", "--checkpoint", checkpoint, "--json", str(sharded), "--batch-size", "2",
               *engine]  # fmt: skip
    run = _run(_torchrun(STANDALONE, command))
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("scores written to") == 1
    expected, actual = json.loads(single.read_text()), json.loads(sharded.read_text())
    matrix = actual["confusion_matrix"]
    assert matrix == expected["confusion_matrix"]
    assert sum(map(sum, matrix)) == 5 * 32 * 40  # every validation pixel counted once
    assert actual["boundary_f1"] == pytest.approx(expected["boundary_f1"], rel=1e-12)
    assert actual["per_class_boundary_f1"] == pytest.approx(expected["per_class_boundary_f1"])


def _two_nodes(recipe: Path, outs: tuple[Path, Path], *extra: str) -> list[tuple[int, str, str]]:
    """Two torchrun launchers of one worker each, as nodes 0 and 1 meeting on loopback."""
    port = _free_port()
    with ExitStack() as stack:
        launchers = []
        for node, out in enumerate(outs):
            launcher = ["--nnodes=2", "--nproc_per_node=1", f"--node_rank={node}",
                        "--master_addr=127.0.0.1", f"--master_port={port}"]  # fmt: skip
            command = ["train", "--recipe", str(recipe), "--out", str(out), *extra]
            launchers.append(stack.enter_context(_launched(_torchrun(launcher, command))))
        results = []
        for launcher in launchers:
            stdout, stderr = launcher.communicate(timeout=120)
            results.append((launcher.returncode, stdout, stderr))
    return results


def test_two_nodes_write_one_run_folder_and_need_a_shared_one_to_resume(tmp_path):
    recipe = _write_recipe(tmp_path, epochs=1, freeze_encoder_epochs=0)
    outs = (tmp_path / "node0", tmp_path / "node1")  # as if each node had its own disk
    (code0, out0, err0), (code1, out1, err1) = _two_nodes(recipe, outs)
    assert (code0, code1) == (0, 0), err0[-2000:] + err1[-2000:]
    assert {p.name for p in outs[0].iterdir()} == {
        "last.pt", "best.pt", "metrics.jsonl", "curves.png", "recipe.yaml", "plots"
    }  # fmt: skip
    assert not outs[1].exists()
    assert "run folder" in out0 and "run folder" not in out1
    training = Checkpoint.load(outs[0] / "last.pt").training
    assert (training["world_size"], training["global_step"]) == (2, STEPS // 2)

    (code0, _, err0), (code1, _, err1) = _two_nodes(recipe, outs, "--resume")
    assert code0 != 0 and code1 != 0
    for stderr in (err0, err1):
        assert "rank 0: step 4, rank 1: no checkpoint" in stderr
        assert "filesystem every node shares" in stderr


def _worker_of_rank(launcher: subprocess.Popen, rank: int) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        worker = _workers(launcher).get(rank)
        if worker is not None:
            return worker
        time.sleep(0.05)
    raise AssertionError(f"no worker of rank {rank} appeared")


def test_killed_worker_stops_the_run_and_resume_is_exact(two_process_run, tmp_path):
    recipe = _write_recipe(tmp_path)
    out = tmp_path / "killed"
    command = _torchrun(STANDALONE, ["train", "--recipe", str(recipe), "--out", str(out)])
    with _launched(command) as launcher:
        worker = _worker_of_rank(launcher, 1)
        deadline = time.monotonic() + 60
        while not (out / "last.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(worker, signal.SIGKILL)
        _, stderr = launcher.communicate(timeout=2 * TIMEOUT_S)  # stops, does not hang
    assert launcher.returncode != 0
    root_cause = stderr[stderr.index("Root Cause") :]
    assert "rank      : 1" in root_cause and "Signal 9 (SIGKILL)" in root_cause
    interrupted = Checkpoint.load(out / "last.pt").training["global_step"]
    assert interrupted < STEPS, "the run finished before it could be killed"

    resumed = _run(_torchrun(STANDALONE, ["train", "--recipe", str(recipe), "--out", str(out),
                                          "--resume"]))  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, actual = _weights(two_process_run), _weights(out)
    for name in expected:
        assert torch.equal(actual[name], expected[name]), name


def _running(pid: int) -> bool:
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def test_hung_worker_times_out_instead_of_blocking(tmp_path):
    recipe = _write_recipe(tmp_path)
    out = tmp_path / "hung"
    command = _torchrun(STANDALONE, ["train", "--recipe", str(recipe), "--out", str(out)])
    with _launched(command, timeout_s=3) as launcher:
        waiting, stalled = _worker_of_rank(launcher, 0), _worker_of_rank(launcher, 1)
        deadline = time.monotonic() + 60
        while not (out / "last.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(stalled, signal.SIGSTOP)  # alive but silent: only a timeout can end the wait
        while _running(waiting) and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(stalled, signal.SIGCONT)  # lets it receive torchrun's SIGTERM
        _, stderr = launcher.communicate(timeout=60)
    assert launcher.returncode != 0
    assert "Timed out waiting 3000ms" in stderr, stderr[-4000:]  # the whole tail if it fails
