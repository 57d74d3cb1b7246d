"""Data-parallel training under torchrun on the CPU (gloo on loopback, one thread per process): two
processes learn and end with the same weights, only rank 0 writes, two "machines" meet through c10d
rendezvous on 127.0.0.1, and a killed two-process run resumes to the weights of an uninterrupted one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from components.model.distributed import Ranks, shard
from tests.project import REPO_ROOT
from tests.servers import free_port

pytestmark = pytest.mark.slow
ENV = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def standalone(base: Path, out: Path, checkpoints: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([*TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "tests.ddp_job", str(base),
                           str(out), checkpoints, *extra], cwd=REPO_ROOT, env=ENV, capture_output=True, text=True,
                          timeout=600)


def ranks_of(out: Path) -> list[dict]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_every_rank_gets_a_different_shard_that_changes_with_the_epoch():
    from components.data.preprocess import TokenizedSplit
    from components.model.batches import epoch_batches

    split = TokenizedSplit([[1] * (5 + i % 7) for i in range(50)], [i % 2 for i in range(50)])
    ranks = [Ranks(r, 2, r) for r in (0, 1)]
    first = [[batch.tolist() for batch in shard(epoch_batches(split, 4, seed=3, epoch=1), r)] for r in ranks]
    second = [[batch.tolist() for batch in shard(epoch_batches(split, 4, seed=3, epoch=2), r)] for r in ranks]
    assert len(first[0]) == len(first[1]) == 7  # 13 batches padded to 14: equal steps on each rank
    # The one batch both ranks see is the padding: the epoch's first batch again, at rank 1's end.
    assert set(map(tuple, first[0])) & set(map(tuple, first[1])) == {tuple(first[0][0])} == {tuple(first[1][-1])}
    assert first[0] != second[0]
    covered = {i for batch in first[0] + first[1] for i in batch}
    assert covered == set(range(50))


def test_two_processes_learn_and_end_with_the_same_weights(tiny_base_model, tmp_path):
    done = standalone(tiny_base_model, tmp_path, "per-rank")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rank0, rank1 = ranks_of(tmp_path)
    assert rank0["world_size"] == rank1["world_size"] == 2
    assert rank0["digest"] == rank1["digest"]
    assert rank0["train_loss"] == rank1["train_loss"]  # averaged over the ranks
    assert rank0["train_loss"][-1] < rank0["train_loss"][0] and rank0["best_score"] >= 0.8
    assert (tmp_path / "checkpoints-rank0" / "last.pt").is_file()
    assert not (tmp_path / "checkpoints-rank1").exists()  # only rank 0 writes


def test_two_machines_meet_through_c10d_rendezvous_on_loopback(tiny_base_model, tmp_path):
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = [subprocess.Popen([*TORCHRUN, "--nnodes=2", "--nproc_per_node=1", f"--node_rank={rank}",
                               "--rdzv_backend=c10d", f"--rdzv_endpoint={endpoint}", "--rdzv_id=tunegate-test",
                               "-m", "tests.ddp_job", str(tiny_base_model), str(tmp_path), "per-rank"],
                              cwd=REPO_ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in (0, 1)]
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    rank0, rank1 = ranks_of(tmp_path)
    assert rank0["world_size"] == 2 and rank0["digest"] == rank1["digest"]


def test_a_killed_two_process_run_resumes_to_the_uninterrupted_weights(tiny_base_model, tmp_path):
    whole = standalone(tiny_base_model, tmp_path / "whole", str(tmp_path / "whole-checkpoints"))
    assert whole.returncode == 0, whole.stderr[-3000:]
    checkpoints = str(tmp_path / "checkpoints")
    killed = standalone(tiny_base_model, tmp_path / "killed", checkpoints, "13")
    assert killed.returncode != 0
    assert not (tmp_path / "killed" / "rank0.json").exists()
    resumed = standalone(tiny_base_model, tmp_path / "resumed", checkpoints)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rank0, rank1 = ranks_of(tmp_path / "resumed")
    assert rank0["resumed_from_step"] == 10  # the last checkpoint before step 13 (one every 5 steps)
    assert rank0["digest"] == rank1["digest"] == ranks_of(tmp_path / "whole")[0]["digest"]


def test_dvc_repro_runs_the_train_stage_under_torchrun(tiny_base_model, tmp_path, monkeypatch):
    from components.lifecycle.versioning import run_dvc
    from tests.project import make_project
    from tunegate.cli import main

    for key in ("GLOO_SOCKET_IFNAME", "MASTER_ADDR"):
        monkeypatch.setenv(key, ENV[key])
    root = make_project(tmp_path / "project", tiny_base_model, rows=300,
                        train={"processes": 2, "epochs": 2, "checkpoint_every_steps": 4})
    assert main(["--project", str(root), "ingest"]) == 0
    repro = run_dvc(root, "repro", "train", capture=True)
    assert "rank 0 of 2 data-parallel processes" in repro.stdout + repro.stderr
    history = json.loads((root / "artifacts" / "train_history.json").read_text())
    assert history["device"] == "cpu" and len(history["history"]) == 2
    assert (root / "artifacts" / "model" / "model.safetensors").is_file()
    assert not list((root / ".tunegate" / "checkpoints").glob("*/last.pt"))  # cleared by rank 0 when done
