"""Issue 16 item 3: a small file cannot make the loader allocate a huge seed, and absurd
germination options get a clear error, not an allocator failure.

A ~42 KB checkpoint of a small transformer model with one ``lora`` seed (rank 4) is edited so
that its envelope declares a much larger rank. Each load runs in a child process (a crash or
an out-of-memory kill fails the test, not the run) under an address-space limit of 1 GiB
above what the child already maps, so an attempt to build the declared seed cannot hurt the
machine; the child reports the error and how much its peak resident memory grew. The
refusal must come from the checks that run before anything is built: the message names the
declared size, and the peak memory grows by far less than the seed would need.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent(
    r"""
    import io, json, resource, sys, time
    import torch
    from torch import nn
    from esper_core.checkpoint import load_checkpoint
    from esper_core.errors import EsperError
    from esper_core.gates import QualityGates
    from esper_core.hosts import TransformerHost
    from esper_core.inject import inject_slots
    from esper_core.model import MorphogeneticModel

    torch.set_num_threads(1)
    case = json.loads(sys.argv[1])

    def model(max_seed_params=2**26):
        torch.manual_seed(0)
        host = TransformerHost(32, n_embd=16, n_head=2, n_layer=2, block_size=8, num_segments=1)
        return MorphogeneticModel(host, gates=QualityGates("permissive"), max_seed_params=max_seed_params)

    class Foreign(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(32, 16)
            self.body = nn.Linear(16, 16)

        def forward(self, x):
            return self.body(self.embed(x))

    def foreign(max_seed_params):
        m = Foreign()
        inject_slots(m, {"body": "transformer"}, example_input=torch.zeros(1, 4, dtype=torch.long),
                     max_seed_params=max_seed_params)
        return m

    limit = case["max_seed_params"]
    if case["via"] == "foreign":
        source, prefix = foreign(2**26), "esper_slots.body."
        source.esper_slots["body"].germinate("lora", options={"rank": 4})
    else:
        source, prefix = model(), "slots.r0c0."
        source.germinate("r0c0", "lora", options={"rank": 4})
    state = source.state_dict()
    key = prefix + "_extra_state"
    state[key] = state[key].replace('"rank":4', '"rank":%d' % case["rank"])
    rank = case["rank"]
    shapes = {prefix + "seed.down.weight": (rank, 16), prefix + "seed.up.weight": (16, rank)}
    for name, shape in shapes.items():  # tensors whose shapes claim the declared seed, holding no data
        if case.get("tensors") == "expanded":
            state[name] = torch.zeros(1, 1).expand(*shape)
        elif case.get("tensors") == "meta":
            state[name] = torch.empty(*shape, device="meta")
    buffer = io.BytesIO()
    torch.save(state, buffer)
    size = len(buffer.getvalue())
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    target = foreign(limit) if case["via"] == "foreign" else model(limit)

    # Protect the machine: 1 GiB of address space above what is mapped now.
    with open("/proc/self/status") as f:
        mapped = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (mapped + 2**30, resource.RLIM_INFINITY))

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    error = None
    try:
        if case["via"] == "germinate":
            target.germinate("r0c0", "lora", options={"rank": case["rank"]})
        elif case["via"] == "load_checkpoint":
            load_checkpoint(target, state)
        else:
            target.load_state_dict(state)
    except EsperError as exc:
        error = [type(exc).__name__, str(exc)]
    except BaseException as exc:
        error = ["not the library's: " + type(exc).__name__, str(exc)[:300]]
    seconds = time.perf_counter() - start
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(json.dumps({"file_bytes": size, "error": error, "seconds": seconds, "grown_mib": grown_kib / 1024}))
    """
)

DIM = 16
CASES = [
    # (rank, max_seed_params of the loading slot, how, text the message must contain)
    (4_194_304, 2**26, "load_checkpoint", "max_seed_params"),
    (4_194_304, 2**26, "model.load_state_dict", "max_seed_params"),
    (4_194_304, 2**26, "foreign", "max_seed_params"),
    (2**26, 2**26, "load_checkpoint", "max_seed_params"),
    (2**26, 2**26, "model.load_state_dict", "max_seed_params"),
    (2**26, 2**26, "foreign", "max_seed_params"),
    # Within the slot's bound: refused because the file does not hold the declared tensors.
    (2**20, 2**26, "load_checkpoint", "the file is inconsistent"),
    (2**20, 2**26, "model.load_state_dict", "the file is inconsistent"),
    (2**20, 2**26, "foreign", "the file is inconsistent"),
    # A slot that accepts genuinely huge seeds: still nothing built for an 8 GiB claim.
    (2**26, 2**40, "load_checkpoint", "the file is inconsistent"),
    (2**26, 2**40, "foreign", "the file is inconsistent"),
    # Germination with absurd options: refused from the closed-form count.
    (4_194_304, 2**26, "germinate", "max_seed_params"),
    (2**26, 2**26, "germinate", "max_seed_params"),
    (2**40, 2**26, "germinate", "max_seed_params"),
]


def run_child(rank: int, max_seed_params: int, via: str, tensors: str = "file") -> dict:
    case = json.dumps({"rank": rank, "max_seed_params": max_seed_params, "via": via, "tensors": tensors})
    done = subprocess.run(
        [sys.executable, "-c", CHILD, case], capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, f"child died ({done.returncode}): {done.stderr[-2000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("rank", "max_seed_params", "via", "needle"), CASES)
def test_a_declared_seed_larger_than_the_file_is_refused_before_anything_is_built(
    rank, max_seed_params, via, needle
) -> None:
    result = run_child(rank, max_seed_params, via)
    kind, message = result["error"] or ("accepted", "")
    expected = "LifecycleError" if via == "germinate" else "CheckpointError"
    assert kind == expected, (kind, message)
    assert needle in message, message
    assert f"{2 * DIM * rank:,}" in message, message  # the exact declared size is named
    seed_mib = 2 * DIM * rank * 4 / 2**20
    # Building the seed would have cost seed_mib (128 MiB to 8 TiB); the checks cost almost nothing.
    assert result["grown_mib"] < min(32.0, seed_mib / 4), result
    if via != "germinate":
        assert result["file_bytes"] < 64_000, result


@pytest.mark.parametrize("tensors", ["expanded", "meta"])
@pytest.mark.parametrize("via", ["load_checkpoint", "foreign"])
def test_tensors_whose_shapes_claim_the_seed_without_data_do_not_count(tensors, via) -> None:
    """A stride-0 view or a ``meta`` tensor has the declared shape but holds (almost) no data:
    the declared size is compared with the data the file holds, not with shapes."""
    rank = 2**20
    result = run_child(rank, 2**26, via, tensors)
    kind, message = result["error"] or ("accepted", "")
    assert kind == "CheckpointError", (kind, message)
    assert "the file is inconsistent" in message or "meta device" in message, message
    assert result["grown_mib"] < 32.0, result
    assert result["file_bytes"] < 64_000, result
