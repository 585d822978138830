"""Every GPU kernel compiled for Hopper without a GPU: no register spills, shared memory within a
block's limit, tensor-core (wgmma) GEMMs, 64-bit divisions only where a 64-bit index needs them.

The Triton checks run in a fresh Python: conftest.py sets TRITON_INTERPRET=1 where no GPU is visible,
under which Triton's kernels are interpreted and cannot be compiled."""
import os
import re

import pytest

from benchmarks import kernel_resources
from benchmarks.kernel_resources import ROOT
from helpers import in_fresh_python

ARCH = "sm_90"
GEMM_KERNELS = ("_styled_conv2d_kernel", "_input_backward_kernel", "_weight_backward_kernel", "_to_rgb_kernel")

needs_cuda_tools = pytest.mark.skipif(bool(kernel_resources.missing_tools(["cuda"])),
                                      reason="; ".join(kernel_resources.missing_tools(["cuda"])))
needs_triton_tools = pytest.mark.skipif(bool(kernel_resources.missing_tools(["triton"], interpreted_ok=True)),
                                        reason="; ".join(kernel_resources.missing_tools(["triton"], interpreted_ok=True)))


def problems(rows):
    return [f"{row['kernel']} {row['dtype']} {row.get('config', '')}: {problem}"
            for row in rows for problem in kernel_resources.check(row, ARCH)]


def kernels_defined_in(source):
    return set(re.findall(r"__global__\s+void\s+(\w+)", open(source).read()))


def threads_per_block():
    return int(re.search(r"kThreadsPerBlock = (\d+)", open(os.path.join(ROOT, "csrc", "cuda", "cuda_common.cuh")).read())
               .group(1))


@pytest.mark.slow
@needs_cuda_tools
def test_cuda_kernels_of_a_source_compile_without_spills():
    """fourier_embedding.cu holds a grid-stride kernel and a shared-memory reduction: every template
    instance is found, none spills, and the reduction's shared array is the size the source declares."""
    source = os.path.join(ROOT, "csrc", "cuda", "fourier_embedding.cu")
    rows = kernel_resources.cuda_rows(ARCH, [source])
    assert {row["kernel"].split("<")[0] for row in rows} == kernels_defined_in(source)
    assert all(row["arch"] == ARCH and row["registers"] > 0 for row in rows)
    assert not problems(rows)
    backward = {row["dtype"]: row for row in rows if row["kernel"].startswith("fourier_embedding_backward_kernel<")}
    # __shared__ opmath_t partial[3][kThreadsPerBlock]: float for the 16- and 32-bit types, double for float64
    assert {dtype: row["static_shared_bytes"] for dtype, row in backward.items()} == {
        "bfloat16": 3 * threads_per_block() * 4, "float16": 3 * threads_per_block() * 4,
        "float32": 3 * threads_per_block() * 4, "float64": 3 * threads_per_block() * 8}


# A 64-bit division in a plain kernel and in the two index instances of a templated one, and a 32-bit one.
DIVIDING_KERNELS = """
__global__ void divide_in_64_bits(long long* values, long long divisor) { values[threadIdx.x] /= divisor; }
__global__ void divide_in_32_bits(int* values, int divisor) { values[threadIdx.x] /= divisor; }
template <typename index_t>
__global__ void remainder_kernel(index_t* values, index_t divisor) { values[threadIdx.x] %= divisor; }
template __global__ void remainder_kernel<int>(int*, int);
template __global__ void remainder_kernel<long>(long*, long);
"""


@pytest.mark.slow
@needs_cuda_tools
def test_64_bit_divisions_are_found_and_are_problems_outside_64_bit_index_instances(tmp_path):
    source = tmp_path / "divide.cu"
    source.write_text(DIVIDING_KERNELS)
    rows = {row["kernel"]: row for row in kernel_resources.cuda_rows(ARCH, [str(source)])}
    assert rows["divide_in_64_bits"]["int64_division_routines"] == ["__cuda_sm20_div_s64"]
    assert rows["remainder_kernel<long>"]["int64_division_routines"] == ["__cuda_sm20_rem_s64"]
    assert rows["divide_in_32_bits"]["int64_division_calls"] == rows["remainder_kernel<int>"]["int64_division_calls"] == 0
    assert {name: row["index_bits"] for name, row in rows.items()} == {
        "divide_in_64_bits": None, "divide_in_32_bits": None, "remainder_kernel<int>": 32,
        "remainder_kernel<long>": 64}
    (problem,) = problems([rows["divide_in_64_bits"]])
    assert "calls to the 64-bit integer division routines (__cuda_sm20_div_s64)" in problem
    # A 64-bit index instance runs only for tensors with offsets of 2^31 and more: its divisions are expected.
    assert not problems([rows["divide_in_32_bits"], rows["remainder_kernel<int>"], rows["remainder_kernel<long>"]])


@pytest.mark.slow
@needs_cuda_tools
def test_cuda_kernels_divide_in_64_bits_only_in_their_64_bit_index_instances():
    rows = kernel_resources.cuda_rows(ARCH)
    instances = {}
    for row in rows:
        instances.setdefault(row["kernel"].split("<")[0], set()).add(row["index_bits"])
    assert instances and all(bits == {32, 64} for bits in instances.values()), instances
    assert all(row["int64_division_calls"] == 0 for row in rows if row["index_bits"] == 32)
    assert not problems(rows)


@pytest.mark.slow
@needs_triton_tools
@pytest.mark.parametrize("kernel", ["_fold_copy_kernel", "_fourier_embedding_kernel"])
def test_element_wise_triton_kernels_do_not_divide_in_64_bits(kernel):
    rows = in_fresh_python(f"""
launches = [launch for launch in kr.record_launches(torch.bfloat16, True) if launch[0] == {kernel!r}]
print(json.dumps([kr.compile_triton_job(job, {ARCH!r}) for job in kr.triton_jobs(launches, {ARCH!r})]))""")
    assert rows and all(row["int64_division_calls"] == 0 for row in rows)
    assert not problems(rows)


@pytest.mark.slow
@needs_triton_tools
def test_pixelfolder_launches_every_triton_kernel():
    launched, kernels = in_fresh_python(
        "print(json.dumps([sorted({name for name, *_ in kr.record_launches(torch.bfloat16, True)}),"
        " sorted(kr.triton_kernels())]))")
    assert kernels and launched == kernels


@pytest.mark.slow
@needs_triton_tools
@pytest.mark.parametrize("kernel", GEMM_KERNELS)
def test_bfloat16_gemm_kernels_use_wgmma_without_spills_in_every_config(kernel):
    """The first launch PixelFolder-256 makes, compiled in each autotune config its autotuner may pick
    for it (python -m benchmarks.kernel_resources compiles every launch)."""
    rows, configs = in_fresh_python(f"""
launch = next(launch for launch in kr.record_launches(torch.bfloat16, True) if launch[0] == {kernel!r})
rows = [kr.compile_triton_job(job, {ARCH!r}) for job in kr.triton_jobs([launch], {ARCH!r})]
print(json.dumps([rows, len(kr.configs_for(*launch[1:]))]))""")
    assert rows and len(rows) == configs
    assert not problems(rows)
    assert all(row["hgmma"] > 0 for row in rows), [(row["config"], row["hgmma"]) for row in rows]


BACKWARD_KERNELS = ("_input_backward_kernel", "_weight_backward_kernel")


@pytest.mark.slow
@needs_triton_tools
def test_backward_kernels_compile_for_sm90_without_atomic_instructions(tmp_path):
    """No float atomics, read from the PTX (atom.* / red.* instructions) of each backward kernel as
    PixelFolder launches it in bfloat16, in its first config; a kernel with tl.atomic_add shows the check
    finds them."""
    (tmp_path / "atomic_kernel.py").write_text(
        "import triton\nimport triton.language as tl\n\n\n@triton.jit\ndef atomic_kernel(ptr):\n"
        "    tl.atomic_add(ptr + tl.arange(0, 32), 1.0)\n")
    found = in_fresh_python(f"""
import re, sys, triton
from triton.compiler import ASTSource
sys.path.insert(0, {str(tmp_path)!r})
from atomic_kernel import atomic_kernel

def atomics(source):
    ptx = triton.compile(source, target=kr.triton_target("sm_90")).asm["ptx"]
    return sorted(set(re.findall(r"\\b(?:atom|red)\\.[\\w.]+", ptx)))

jobs = {{}}
for job in kr.triton_jobs(kr.record_launches(torch.bfloat16, True, size=16), "sm_90", {BACKWARD_KERNELS!r}):
    jobs.setdefault(job["name"], job)
found = {{name: atomics(ASTSource(job["function"], job["signature"], job["constants"], job["attrs"]))
         for name, job in jobs.items()}}
found["atomic_kernel"] = atomics(ASTSource(atomic_kernel, {{"ptr": "*fp32"}}))
print(json.dumps(found))""")
    assert found.pop("atomic_kernel"), "the check finds no atomic instruction in a kernel that has one"
    assert found == {name: [] for name in BACKWARD_KERNELS}


@pytest.mark.parametrize("argv, named", [
    (["--json", "out.json", "--arch", "sm_42"], "--arch"),
    (["--json", "out.json", "--dtypes", "float8"], "--dtypes"),
    (["--json", "/no/such/folder/out.json"], "--json"),
    (["--json", "out.txt"], "--json"),
])
def test_bad_arguments_exit_with_one_line(argv, named, capsys):
    with pytest.raises(SystemExit) as exit:
        kernel_resources.main(argv)
    assert exit.value.code != 0
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and named in error[0]
