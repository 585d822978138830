"""The byte ledger counts each memory pass of a design from its code path: views are free, broadcasts count
once, composite ops are followed into the passes they make, Triton launches count what they store."""
import json
import os
import subprocess
import sys

import pytest
import torch

from benchmarks import byte_ledger

BF16 = torch.bfloat16
SMALL_LAYERS = [(16, 32, 8), (8, 32, 16)]  # (C_in, C_out, resolution); the first unfolds its output


def passes_of(function, *args):
    with byte_ledger.PassRecorder() as recorder:
        function(*args)
    return recorder.passes


def test_views_are_free_and_an_operator_reads_its_inputs_and_writes_its_outputs():
    a, b = torch.randn(4, 8), torch.randn(4, 8)
    assert passes_of(lambda: a.t().reshape(8, 4)[1:]) == []
    (name, reads, writes), = passes_of(torch.add, a, b)
    assert name == "aten::add.Tensor" and (reads, writes) == (2 * 32 * 4, 32 * 4)


def test_a_broadcast_operand_is_read_once_and_an_in_place_update_reads_and_writes_its_target():
    a, row = torch.randn(4, 8), torch.randn(1, 8)
    (_, reads, writes), = passes_of(lambda: a.add_(row.expand(4, 8)))
    assert (reads, writes) == (32 * 4 + 8 * 4, 32 * 4)
    (_, reads, writes), = passes_of(lambda: a.copy_(row.expand(4, 8)))  # overwritten, not read
    assert (reads, writes) == (8 * 4, 32 * 4)


def test_allocations_move_nothing_and_fills_only_write():
    a = torch.randn(4, 8)
    assert passes_of(lambda: (torch.empty(10), a.new_empty(5))) == []
    assert [(r, w) for _, r, w in passes_of(lambda: (a.new_zeros(5), torch.zeros(3)))] == [(0, 20), (0, 12)]


def test_composite_operators_are_followed_into_their_copies():
    """An einsum over channels-last operands copies them into the layout its batched matmul wants: the
    ledger sees the copies, which a count of the einsum's own inputs and output would miss."""
    a = torch.randn(2, 16, 8, 8).to(memory_format=torch.channels_last)
    b = torch.randn(2, 16, 8, 8).to(memory_format=torch.channels_last)
    passes = passes_of(torch.einsum, "bchw,bchw->bc", a, b)
    assert not any(name == "aten::einsum" for name, *_ in passes)
    assert sum(r + w for _, r, w in passes) > 2 * a.numel() * 4 + 2 * 16 * 4


def test_the_reference_design_is_traced_pass_by_pass_and_extrapolates_exactly_in_the_batch():
    layer = SMALL_LAYERS[0]
    forward, backward = byte_ledger.trace("reference", torch.contiguous_format, *layer, True, 5, BF16)
    names = [name for name, *_ in forward]
    assert "aten::convolution" in names and "aten::leaky_relu" in names
    assert any(name == "aten::convolution_backward" for name, *_ in backward)
    (row,) = byte_ledger.ledger(5, BF16, designs=[byte_ledger.DESIGNS[0]], layers=[layer])
    assert row["forward_mb"]["reference"] == pytest.approx(sum(byte_ledger.totals(forward)) / byte_ledger.MB)
    assert row["backward_mb"]["reference"] == pytest.approx(sum(byte_ledger.totals(backward)) / byte_ledger.MB)


def test_the_minimum_reads_every_input_once_and_writes_every_output_once():
    in_channels, out_channels, resolution, batch, size = 16, 32, 8, 3, 2
    x, y = batch * in_channels * 64 * size, batch * out_channels * 64 * size
    parameters = (out_channels * in_channels * 9 + batch * in_channels + 1 + out_channels) * size
    noise = batch * 64 * size
    forward, backward = byte_ledger.minimum(in_channels, out_channels, resolution, batch, BF16)
    assert forward == x + parameters + noise + y
    assert backward == (2 * y + x + parameters + noise) + (x + parameters)
    # and no traced design beats it
    for design in byte_ledger.DESIGNS[:1]:
        traced = byte_ledger.trace(design[1], design[2], in_channels, out_channels, resolution, False, batch, BF16)
        assert sum(byte_ledger.totals(traced[0])) >= forward and sum(byte_ledger.totals(traced[1])) >= backward


TRACE_TRITON = """
import json, torch
from benchmarks import byte_ledger
forward, backward = byte_ledger.trace("triton", torch.channels_last, 8, 32, 16, False, 2, torch.bfloat16)
print(json.dumps([forward, backward]))
"""


def test_triton_launches_are_recorded_not_run_with_what_they_store():
    """In a process of its own: the tests run Triton's interpreter, whose kernels carry no source to read
    the stores from; the ledger never runs a Triton kernel, so it needs no interpreter."""
    pytest.importorskip("triton")
    environment = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", TRACE_TRITON], capture_output=True, text=True, env=environment,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert result.returncode == 0, result.stderr
    forward, backward = json.loads(result.stdout.splitlines()[-1])
    launches = [(name, w) for name, _, w in forward + backward if name.startswith("triton ")]
    assert launches and all(w > 0 for _, w in launches)
    output_bytes = 2 * 32 * 16 * 16 * 2
    assert any(w >= output_bytes for name, _, w in forward if name.startswith("triton "))


def test_the_table_shows_every_design_against_the_minimum():
    rows = byte_ledger.ledger(2, BF16, designs=[byte_ledger.DESIGNS[0]], layers=SMALL_LAYERS)
    report = {"batch": 2, "dtype": "bf16", "torch": torch.__version__, "date": "today", "layers": rows}
    text = byte_ledger.markdown(report)
    assert "| 16 -> 32 @ 8 | yes |" in text and "| 8 -> 32 @ 16 | no |" in text
    total = sum(row["forward_mb"]["reference"] for row in rows) / sum(row["forward_mb"]["minimum"] for row in rows)
    assert f"**{total:.2f}x**" in text
