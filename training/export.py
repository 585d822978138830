"""A trained generator as a program that runs without this repository: a torch.export program, or an
AOTInductor package.

    python -m training.export CHECKPOINT --out generator.pt2 [--batch N | --dynamic-batch]
                              [--truncation PSI | --truncation-input] [--noise const|random]
                              [--backend reference|auto|cpu|cuda|triton] [--aoti]
                              [--device cpu|cuda] [--dtype float32|bfloat16|float16] [--size 256]
    python -m training.export --check generator.pt2

The program maps z (B, 512) (and psi, a 0-d tensor, with ``--truncation-input``) to images
(B, 3, S, S) in float32, from the EMA generator. With ``--noise const`` (the default) every layer's
noise is a constant of the program, drawn once from ``--seed`` (StyleGAN2-ADA's noise_mode="const"),
so it is deterministic; ``--noise random`` draws fresh noise at every call from torch's global RNG.

``--backend reference`` gives a program of ATen ops only, which ``torch.export.load(path).module()``
runs with nothing but torch installed; the other backends' programs hold this package's ops and
need ``pixelfolder_ops`` imported before loading. ``--aoti`` compiles the program ahead of time into a
package for ``torch._inductor.aoti_load_package``. Beside the output, ``OUT.check.pt`` keeps a few z
and the eager generator's images for them, and the program's metadata; ``--check OUT`` reloads the
program and compares.
"""
from training import extras

if __name__ == "__main__":
    extras.require("train")  # before the imports that need it

import argparse
import json
import math
import os

import torch
from torch import nn

import pixelfolder_ops
from training import cli

METADATA_FILE = "pixelfolder_export.json"
CHECK_SAMPLES = 4
# float32 programs must give the eager images to this relative error (max |diff| / max |eager|):
# the same kernels, up to the order in which compiled code sums.
CHECK_TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 4e-3}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ExportableGenerator(nn.Module):
    """The EMA generator with its truncation centre and, for constant noise, its noise inputs as
    buffers: z (float32) in, float32 images out."""

    def __init__(self, generator, truncation, truncation_input, noise_mode, seed, dtype):
        super().__init__()
        self.generator = generator.to(dtype).eval().requires_grad_(False)
        self.dtype, self.noise_mode, self.truncation_input = dtype, noise_mode, truncation_input
        self.truncation = float(truncation)
        with torch.no_grad():
            self.register_buffer("truncation_center", generator.mean_latent().to(dtype))
        rng = torch.Generator().manual_seed(seed)
        device = next(generator.parameters()).device
        self.noise_count = len(generator.noise_shapes(1))
        for index, shape in enumerate(generator.noise_shapes(1)):
            noise = torch.randn(shape, generator=rng).to(device, dtype) if noise_mode == "const" else None
            self.register_buffer(f"noise_{index}", noise)

    def noise(self, batch):
        if self.noise_mode == "const":
            return [getattr(self, f"noise_{index}") for index in range(self.noise_count)]
        return [torch.randn(shape, device=self.truncation_center.device, dtype=self.dtype)
                for shape in self.generator.noise_shapes(batch)]

    def forward(self, z, psi=None):
        w = self.generator.style(z.to(self.dtype))
        psi = psi.to(self.dtype) if self.truncation_input else self.truncation
        if self.truncation_input or self.truncation != 1:
            w = self.truncation_center + psi * (w - self.truncation_center)
        images = self.generator(w, input_is_latent=True, noise=self.noise(z.shape[0]))
        return images.float()


def program_inputs(metadata, z):
    psi = torch.tensor(metadata["truncation"], device=z.device) if metadata["truncation_input"] else None
    return (z,) if psi is None else (z, psi)


def export_program(module, metadata, example_z):
    """torch.export of ``module`` for z like ``example_z`` (a symbolic batch when ``metadata`` says so)."""
    inputs = program_inputs(metadata, example_z)
    dynamic_shapes = None
    if metadata["dynamic_batch"]:
        batch = torch.export.Dim("batch", min=1, max=4096)
        dynamic_shapes = ({0: batch},) + ((None,) if len(inputs) == 2 else ())
    with torch.no_grad(), pixelfolder_ops.use_backend(metadata["backend"]):
        return torch.export.export(module, inputs, dynamic_shapes=dynamic_shapes)


def custom_ops(program):
    """The non-ATen ops the program calls (this package's, for the fused backends)."""
    names = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    return sorted(name for name in names if name.startswith("pixelfolder_ops."))


def check_path(out):
    return out + ".check.pt"


def export(generator, out, *, batch=None, dynamic_batch=False, truncation=1.0, truncation_input=False,
           noise_mode="const", backend="reference", aoti=False, device="cpu", dtype=torch.float32, seed=0,
           description=None):
    """Writes the program (or AOTInductor package) to ``out`` and the check file beside it; returns
    the metadata."""
    device = torch.device(device)
    module = ExportableGenerator(generator.to(device), truncation, truncation_input, noise_mode, seed, dtype)
    example_batch = CHECK_SAMPLES if dynamic_batch else batch
    z = torch.randn(example_batch, module.generator.style_dim, generator=torch.Generator().manual_seed(seed + 1))
    z = z.to(device)
    metadata = {"model": description or type(generator).__name__, "size": generator.size,
                "style_dim": module.generator.style_dim, "backend": backend, "dtype": str(dtype).replace("torch.", ""),
                "device": device.type, "batch": None if dynamic_batch else batch, "dynamic_batch": dynamic_batch,
                "truncation": float(truncation), "truncation_input": truncation_input, "noise": noise_mode,
                "aoti": aoti, "torch": str(torch.__version__), "pixelfolder_ops": pixelfolder_ops.__version__}
    with torch.no_grad(), pixelfolder_ops.use_backend(backend):
        # One eager call first: 'auto' measures its choices there (it does not while tracing), and
        # these are the images the program must give.
        images = module(*program_inputs(metadata, z))
    program = export_program(module, metadata, z)
    metadata["requires"] = custom_ops(program)
    metadata["needs_pixelfolder_ops"] = bool(metadata["requires"])
    directory = os.path.dirname(os.path.abspath(out))
    os.makedirs(directory, exist_ok=True)
    # Written under temporary names, then renamed: an interrupted export leaves no half-written program.
    temporary = os.path.join(directory, f".{os.path.basename(out)}.tmp.pt2")
    if aoti:
        torch._inductor.aoti_compile_and_package(program, package_path=temporary)
    else:
        torch.export.save(program, temporary, extra_files={METADATA_FILE: json.dumps(metadata)})
    check = {"metadata": metadata, "z": z.cpu(), "images": images.cpu()}
    torch.save(check, check_path(out) + ".tmp")
    os.replace(temporary, out)
    os.replace(check_path(out) + ".tmp", check_path(out))
    return metadata


class ProgramError(Exception):
    """An exported program that cannot be loaded or run here; the message names the file and why."""


def missing_ops(metadata):
    """The ops of this package the program calls that this process has not registered."""
    if metadata["needs_pixelfolder_ops"]:
        import pixelfolder_ops.extension  # noqa: F401  registers the compiled ops when they can be built
    return [name for name in metadata["requires"]
            if not hasattr(getattr(torch.ops, name.split(".")[0]), name.split(".")[1])]


def load_program(path, metadata):
    """A callable for the program at ``path``: the ExportedProgram's module or the AOTInductor runner."""
    missing = missing_ops(metadata)
    if missing:
        raise ProgramError(f"{path} calls {', '.join(missing)}, which this Python does not have: the compiled "
                           f"pixelfolder_ops extension is not loaded here "
                           f"({pixelfolder_ops.backend._unavailable_reason('cpu')})")
    try:
        if metadata["aoti"]:
            return torch._inductor.aoti_load_package(path)
        return torch.export.load(path).module()
    except Exception as error:  # a truncated or foreign file: zipfile, pickle and runtime errors alike
        raise ProgramError(f"{path} is not a readable {'AOTInductor package' if metadata['aoti'] else 'exported program'}"
                           f" ({cli.reason(error)})") from None


def check(path, device=None):
    """Reloads the program at ``path`` and runs it on the check file's z, whole and (for a symbolic
    batch) one at a time and in two uneven parts; returns (worst relative error, tolerance, the batch
    sizes run)."""
    saved = torch.load(check_path(path), weights_only=True)
    metadata = saved["metadata"]
    device = torch.device(device or metadata["device"])
    run = load_program(path, metadata)
    z, expected = saved["z"].to(device), saved["images"]
    splits = [[len(z)]] + ([[1] * len(z), [1, len(z) - 1]] if metadata["dynamic_batch"] else [])
    batches = sorted({size for split in splits for size in split})
    worst = 0.0
    for split in splits:
        parts = [run(*program_inputs(metadata, chunk)) for chunk in torch.split(z, split)]
        actual = torch.cat([p[0] if isinstance(p, (list, tuple)) else p for p in parts]).cpu()
        if actual.shape != expected.shape:
            return math.inf, CHECK_TOLERANCE[DTYPES[metadata["dtype"]]], batches
        worst = max(worst, ((actual - expected).abs().max() / expected.abs().max()).item())
    return worst, CHECK_TOLERANCE[DTYPES[metadata["dtype"]]], batches


def output_file(text):
    """A file to write: not a folder, and no part of its folder a file."""
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"expected a file path for the program, got the folder {text!r}")
    cli.output_folder(os.path.dirname(os.path.abspath(text)))
    return text


def parse_args(argv=None):
    parser = cli.CommandLineParser(prog="python -m training.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", nargs="?", type=cli.existing_path,
                        help="our training checkpoint, a run folder, or an official PixelFolder checkpoint")
    parser.add_argument("--out", type=output_file, help="where to write the program (e.g. generator.pt2)")
    parser.add_argument("--check", metavar="PROGRAM", type=cli.existing_path,
                        help="reload an exported program and compare it with the images kept beside it")
    batch = parser.add_mutually_exclusive_group()
    batch.add_argument("--batch", type=cli.integer(minimum=1), default=1, help="the program's fixed batch size")
    batch.add_argument("--dynamic-batch", action="store_true", help="one program for any batch size")
    truncation = parser.add_mutually_exclusive_group()
    truncation.add_argument("--truncation", type=cli.number(minimum=0), default=1.0,
                            help="psi, fixed in the program (1: none)")
    truncation.add_argument("--truncation-input", action="store_true",
                            help="psi as the program's second input (a 0-d tensor)")
    parser.add_argument("--noise", choices=("const", "random"), default="const",
                        help="constant noise drawn from --seed (deterministic), or fresh noise at every call")
    parser.add_argument("--seed", type=cli.integer(minimum=0), default=0, help="seed of the constant noise")
    parser.add_argument("--backend", choices=("reference",) + tuple(b for b in pixelfolder_ops.backend.KNOWN_BACKENDS
                                                                      if b != "reference") + ("auto",),
                        default="reference", help="reference: ATen ops only, runs with torch alone")
    parser.add_argument("--aoti", action="store_true", help="compile an AOTInductor package instead")
    parser.add_argument("--device", type=cli.device, default="cpu")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    parser.add_argument("--size", type=cli.power_of_two(16, 1024), default=256,
                        help="resolution of an official checkpoint")
    args = parser.parse_args(argv)
    if args.check is None and (args.checkpoint is None or args.out is None):
        parser.error("expected CHECKPOINT and --out (to export), or --check PROGRAM (to verify)")
    if args.check is not None and (args.checkpoint is not None or args.out is not None):
        parser.error("argument --check: expected alone (it verifies an exported program), got CHECKPOINT or --out too")
    if args.check is not None and not os.path.isfile(check_path(args.check)):
        parser.error(f"argument --check: expected {check_path(args.check)} beside the program (written by the export), "
                     f"found none")
    if args.backend not in ("reference", "auto"):
        reason = pixelfolder_ops.backend._unavailable_reason(args.backend)
        if reason is not None:
            parser.error(f"argument --backend: backend '{args.backend}' is unavailable here: {reason}")
    return args


def report_check(path, device=None):
    error, tolerance, batches = check(path, device)
    verdict = "matches" if error <= tolerance else "DOES NOT match"
    print(f"{path} {verdict} the eager generator's images: worst relative error {error:.2e} (tolerance "
          f"{tolerance:.0e}) at batch sizes {', '.join(map(str, batches))}")
    return error <= tolerance


def main(argv=None):
    args = parse_args(argv)
    if args.check is not None:
        try:
            metadata = torch.load(check_path(args.check), weights_only=True)["metadata"]
        except Exception as error:  # truncated, or not a check file
            cli.fail(f"{check_path(args.check)} is not a check file written by training.export ({cli.reason(error)})")
        if metadata["needs_pixelfolder_ops"]:
            print(f"{args.check} calls {', '.join(metadata['requires'])}: pixelfolder_ops is imported to run it")
        try:
            matched = report_check(args.check)
        except ProgramError as error:
            cli.fail(error)
        raise SystemExit(0 if matched else 1)
    from training.generate import load_generator

    device = cli.resolved_device(args.device)
    try:
        generator = load_generator(args.checkpoint, size=args.size, device=device)
    except (ValueError, OSError) as error:
        cli.fail(error)
    description = f"{type(generator).__name__} {generator.size}x{generator.size}"
    metadata = export(generator, args.out, batch=args.batch, dynamic_batch=args.dynamic_batch,
                      truncation=args.truncation, truncation_input=args.truncation_input, noise_mode=args.noise,
                      backend=args.backend, aoti=args.aoti, device=device, dtype=DTYPES[args.dtype], seed=args.seed,
                      description=description)
    kind = "AOTInductor package" if args.aoti else "torch.export program"
    needs = (f"needs pixelfolder_ops ({', '.join(metadata['requires'])})" if metadata["needs_pixelfolder_ops"]
             else "runs with torch alone")
    print(f"wrote {args.out}: {kind} of {description}, {needs}; its check file is {check_path(args.out)}")
    if not report_check(args.out):
        # torch 2.13's AOTInductor fixes the batch of a conv whose groups depend on it (the reference
        # backend's per-image grouped conv) and then ignores the input's batch: never leave such a program.
        for path in (args.out, check_path(args.out)):
            os.remove(path)
        advice = (" (AOTInductor fixes the batch of the reference backend's per-image grouped conv: use a fused "
                  "--backend or a fixed --batch)" if args.aoti and args.dynamic_batch else "")
        cli.fail(f"the exported program does not give the eager images, so it was removed{advice}")


if __name__ == "__main__":
    main()
