"""batch_size: auto's mechanism (components/model/batch_size.py) on real allocations: the peak readings see
what a block allocates, the search picks the largest power of two within the budget and stops where it
must, and a GPU pick with a real model stays within its budget."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from components.model.batch_size import (
    NoBatchSizeFits,
    cgroup_headroom,
    current_rss,
    default_budget,
    is_out_of_memory,
    peak_memory,
    pick_batch_size,
)

MiB = 2**20
CPU = torch.device("cpu")
needs_proc = pytest.mark.skipif(not Path("/proc/self/status").exists(),
                                reason="the CPU readings under test come from /proc (Linux)")


def allocating(mib_per_example: int):
    """A trial that, like a training step, touches memory in proportion to the batch and keeps none of it."""
    def trial(size: int) -> None:
        block = torch.ones(size * mib_per_example * MiB // 8, dtype=torch.float64)  # written: pages resident
        assert float(block[-1]) == 1.0

    return trial


def tiny_trial(size: int) -> None:
    torch.ones(size, 16).sum()


@needs_proc
@pytest.mark.parametrize("method", ["auto", "sampled"])
def test_peak_memory_sees_an_allocation_and_forgets_the_last_one(method):
    with peak_memory(CPU, method=method) as reading:
        block = torch.ones(200 * MiB // 8, dtype=torch.float64)
        time.sleep(0.05)  # the sampler polls every 2 ms; the exact reading needs no wait
        del block
    assert reading.bytes >= reading.start_bytes + 190 * MiB
    assert reading.bytes >= current_rss() + 190 * MiB  # the block was freed: its peak is gone from the RSS

    # The 200 MiB peak above is over: a block that allocates nothing reads about the RSS it started from.
    with peak_memory(CPU, method=method) as empty:
        pass
    assert empty.bytes < empty.start_bytes + 50 * MiB
    assert empty.bytes < reading.bytes - 150 * MiB


@needs_proc
def test_a_tighter_budget_picks_a_smaller_size_and_both_picks_fit():
    trial = allocating(8)
    tight, loose = current_rss() + 100 * MiB, current_rss() + 768 * MiB
    small = pick_batch_size(trial, device=CPU, budget_bytes=tight, largest=4096)
    large = pick_batch_size(trial, device=CPU, budget_bytes=loose, largest=4096)

    assert 1 < small.size < large.size < 4096
    # 8 MiB a row, budgets well away from the sizes' needs: 64 MiB within 100 (128 not), 512 within 768 (1024 not).
    assert (small.size, large.size) == (8, 64)
    for choice in (small, large):
        assert choice.memory == "rss" and choice.stopped == "over budget"
        assert [entry["size"] for entry in choice.tried] == [2**i for i in range(len(choice.tried))]
        assert all(entry["fits"] for entry in choice.tried[:-1]) and not choice.tried[-1]["fits"]
        assert choice.tried[-1]["size"] == 2 * choice.size
        assert choice.peak_bytes <= choice.budget_bytes
        with peak_memory(CPU) as again:  # measured afresh, the picked size still fits
            trial(choice.size)
        assert again.bytes <= choice.budget_bytes


def test_an_out_of_memory_trial_ends_the_search_at_the_size_before():
    def trial(size: int) -> None:
        if size > 8:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore advice")
        tiny_trial(size)

    messages = []
    choice = pick_batch_size(trial, device=CPU, budget_bytes=current_rss() + 1024 * MiB, largest=1024,
                             progress=messages.append)
    assert choice.size == 8 and choice.stopped == "out of memory"
    assert choice.tried[-1] == {"size": 16, "peak_bytes": None, "fits": False,
                                "error": "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"}
    assert len(messages) == 5 and "batch size 16: OutOfMemoryError" in messages[-1]


def test_other_errors_of_a_trial_are_not_taken_for_a_full_memory():
    def trial(size: int) -> None:
        raise IndexError("a bug in the trial")

    with pytest.raises(IndexError, match="a bug"):
        pick_batch_size(trial, device=CPU, budget_bytes=current_rss() + 1024 * MiB, largest=64)


def test_out_of_memory_errors_are_recognized():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    assert is_out_of_memory(MemoryError())
    with pytest.raises(RuntimeError) as cpu_allocator:
        torch.empty(2**62, dtype=torch.uint8)  # beyond any address space: fails whatever the overcommit policy
    assert is_out_of_memory(cpu_allocator.value)
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("out of memory"))  # a ValueError is a bug, whatever it says


@needs_proc
def test_when_even_one_example_does_not_fit_the_error_says_what_it_needed():
    budget = current_rss() + 20 * MiB
    with pytest.raises(NoBatchSizeFits) as raised:
        pick_batch_size(allocating(64), device=CPU, budget_bytes=budget, largest=32, extra_bytes=MiB)
    assert isinstance(raised.value, ValueError)
    message = str(raised.value)
    assert "batch of 1 example needs" in message and f"{budget / 2**30:.2f} GiB" in message
    assert "train.memory_budget" in message
    assert [entry["size"] for entry in raised.value.tried] == [1]

    def oom(size: int) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(NoBatchSizeFits, match="batch of 1 example ran out of memory"):
        pick_batch_size(oom, device=CPU, budget_bytes=budget, largest=32)


def test_largest_caps_the_doubling_at_a_power_of_two_within_it():
    loose = current_rss() + 1024 * MiB
    choice = pick_batch_size(tiny_trial, device=CPU, budget_bytes=loose, largest=10)
    assert choice.size == 8 and choice.stopped == "largest"
    assert [entry["size"] for entry in choice.tried] == [1, 2, 4, 8]
    assert pick_batch_size(tiny_trial, device=CPU, budget_bytes=loose, largest=16).size == 16
    assert pick_batch_size(tiny_trial, device=CPU, budget_bytes=loose, largest=1).size == 1
    with pytest.raises(ValueError, match="at least one example"):
        pick_batch_size(tiny_trial, device=CPU, budget_bytes=loose, largest=0)


def test_extra_bytes_count_against_the_budget():
    trial, budget = allocating(8), current_rss() + 300 * MiB
    without = pick_batch_size(trial, device=CPU, budget_bytes=budget, largest=4096)
    held = pick_batch_size(trial, device=CPU, budget_bytes=budget, largest=4096, extra_bytes=200 * MiB)
    assert held.size < without.size
    assert held.peak_bytes <= budget and held.record()["extra_bytes"] == 200 * MiB


def test_the_record_is_json_for_the_training_history():
    choice = pick_batch_size(tiny_trial, device=CPU, budget_bytes=current_rss() + 1024 * MiB, largest=4)
    record = json.loads(json.dumps(choice.record()))
    assert record["picked"] == 4 and record["memory"] == "rss" and record["stopped"] == "largest"
    assert record["budget_bytes"] == choice.budget_bytes and record["peak_bytes"] == choice.peak_bytes
    assert [entry["size"] for entry in record["tried"]] == [1, 2, 4]
    assert set(record["tried"][0]) == {"size", "peak_bytes", "fits", "error"}


def test_the_cpu_default_budget_is_above_the_memory_in_use():
    rss = current_rss()
    budget = default_budget(CPU)
    assert budget > rss > 0


def test_devices_without_a_memory_reading_are_refused():
    with pytest.raises(ValueError, match="cpu and cuda"):
        pick_batch_size(tiny_trial, device=torch.device("meta"), budget_bytes=2**30, largest=8)


@pytest.mark.parametrize("layout", ["v2", "v1"])
def test_a_cgroup_limit_caps_the_memory_available(tmp_path, layout):
    proc = tmp_path / "cgroup"
    if layout == "v2":
        proc.write_text("0::/pod/container\n")
        own, parent = tmp_path / "pod" / "container", tmp_path / "pod"
        names = ("memory.max", "memory.current", "inactive_file")
    else:
        proc.write_text("5:cpu:/\n4:memory:/pod/container\n0::/\n")
        own, parent = tmp_path / "memory" / "pod" / "container", tmp_path / "memory" / "pod"
        names = ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
    own.mkdir(parents=True)
    limit, usage, inactive = names
    (own / limit).write_text("max\n" if layout == "v2" else "9223372036854771712\n")  # no limit of its own
    (own / usage).write_text(f"{600 * MiB}\n")
    (parent / limit).write_text(f"{1024 * MiB}\n")
    (parent / usage).write_text(f"{700 * MiB}\n")
    (parent / "memory.stat").write_text(f"anon {500 * MiB}\n{inactive} {100 * MiB}\n")
    assert cgroup_headroom(proc, tmp_path) == (1024 - 700 + 100) * MiB

    (parent / limit).write_text("max\n" if layout == "v2" else "9223372036854771712\n")
    assert cgroup_headroom(proc, tmp_path) is None
    assert cgroup_headroom(tmp_path / "absent", tmp_path) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_gpu_pick_with_a_real_model_stays_within_a_small_budget():
    from transformers import BertConfig, BertForSequenceClassification

    device = torch.device("cuda")
    config = BertConfig(vocab_size=400, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=256, max_position_embeddings=128, num_labels=2)
    model = BertForSequenceClassification(config).to(device)
    before = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    generator = torch.Generator(device="cpu").manual_seed(0)  # its own: the global RNG stays as it was
    ids = torch.randint(5, 400, (1, 128), generator=generator)

    def trial(size: int) -> None:
        model.train()
        batch = ids.repeat(size, 1).to(device)
        try:
            model(input_ids=batch, labels=torch.zeros(size, dtype=torch.long, device=device)).loss.backward()
        finally:
            model.zero_grad(set_to_none=True)

    trainable = sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)
    try:
        budget = torch.cuda.memory_allocated(device) + 256 * MiB
        with torch.random.fork_rng(devices=[device]):  # dropout draws: the trials leave the RNG as it was
            choice = pick_batch_size(trial, device=device, budget_bytes=budget, largest=4096,
                                     extra_bytes=2 * 4 * trainable)
        assert choice.memory == "cuda" and choice.stopped == "over budget"
        assert 1 < choice.size < 4096 and choice.peak_bytes <= budget
        with torch.random.fork_rng(devices=[device]), peak_memory(device) as again:
            trial(choice.size)
        assert again.bytes + 2 * 4 * trainable <= budget
        assert all(parameter.grad is None for parameter in model.parameters())
        assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
        assert default_budget(device) > budget
    finally:
        model.cpu()  # its GPU memory back to the cache, then to the device
        torch.cuda.empty_cache()
