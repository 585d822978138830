"""A trained generator as a program that runs without this repository: a torch.export program, an
AOTInductor package, or an ONNX graph.

    python -m training.export CHECKPOINT --out generator.pt2 [--batch N | --dynamic-batch]
                              [--truncation PSI | --truncation-input] [--noise const|random]
                              [--backend reference|auto|cpu|cuda|triton] [--aoti]
                              [--device cpu|cuda] [--dtype float32|bfloat16|float16] [--size N]
    python -m training.export CHECKPOINT --format onnx --out generator.onnx [--opset 20] [same options]
    python -m training.export --check generator.pt2|generator.onnx

The program maps z (B, 512) (and psi, a 0-d tensor, with ``--truncation-input``) to images
(B, 3, S, S) in float32, from the EMA generator: the generator's raw output, nominally in [-1, 1] and
not clipped, as ``G(z)`` and training.generate give it (clip when converting to pixels, as
training.images.to_uint8 does). With ``--noise const`` (the default) every layer's noise is the noise
stored with the model (``G(z, noise="const")``, as training.generate --noise const; StyleGAN2-ADA's
noise_mode="const"), a constant of the program, so it is deterministic; ``--noise random`` draws
fresh noise at every call from torch's global RNG.

``--backend reference`` gives a program of ATen ops only, which ``torch.export.load(path).module()``
runs with nothing but torch installed; the other backends' programs hold this package's ops and
need ``pixelfolder_ops`` imported before loading. ``--aoti`` compiles the program ahead of time into a
package for ``torch._inductor.aoti_load_package``. Beside the output, ``OUT.check.pt`` keeps a few z
and the eager generator's images for them, and the program's metadata; ``--check OUT`` reloads the
program and compares. The check calls the program, and the eager generator before it, with torch's RNG
seeded alike, so random noise is drawn alike by both.

``--format onnx`` (the default for an ``--out`` ending in .onnx) converts the reference backend's
program into an ONNX graph of standard operators (training.export_onnx; needs ``pip install '.[onnx]'``)
and checks it with ONNX Runtime on the CPU; with ``--noise random`` the graph draws its noise with
ONNX's RandomNormalLike, and the check feeds those nodes the noise the eager generator drew.
"""
from training import extras

if __name__ == "__main__":
    extras.require("train")  # before the imports that need it

import json
import math
import os

import torch
from torch import nn

import pixelfolder_ops
from models.generator import NOISE_MODES
from pixelfolder_ops import correctness
from training import cli

METADATA_FILE = "pixelfolder_export.json"
CHECK_SAMPLES = 4
# float32 programs must give the eager images to this relative error (max |diff| / max |eager|):
# the same kernels, up to the order in which compiled code sums.
CHECK_TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 4e-3}
# ONNX graphs must give them to this normwise relative error (||diff|| / ||eager||): ONNX Runtime's
# kernels sum in their own order, and a symbolic batch's modulated convs are patches times weights.
ONNX_CHECK_TOLERANCE = 1e-4
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
FORMATS = ("pt2", "onnx")
# torch's ONNX exporter translates ATen ops into opset 18 and above (a lower request goes through a
# version converter that may silently keep 18); 23 is the highest torch 2.13 writes.
ONNX_OPSETS = (18, 23)
ONNX_DEFAULT_OPSET = 20


class ExportableGenerator(nn.Module):
    """The EMA generator with its truncation centre as a buffer: z (float32) in, float32 images out;
    the model's constant noise, or fresh noise from torch's global RNG drawn here, in forward order."""

    def __init__(self, generator, truncation, truncation_input, noise_mode, dtype):
        super().__init__()
        self.generator = generator.to(dtype).eval().requires_grad_(False)
        self.dtype, self.noise_mode, self.truncation_input = dtype, noise_mode, truncation_input
        self.truncation = float(truncation)
        with torch.no_grad():
            self.register_buffer("truncation_center", generator.mean_latent().to(dtype))

    def noise(self, batch):
        if self.noise_mode == "const":
            return "const"
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


def check_splits(metadata, count):
    """How the check cuts its ``count`` z: whole, and for a symbolic batch also one at a time and in
    two uneven parts."""
    return [[count]] + ([[1] * count, [1, count - 1]] if metadata["dynamic_batch"] else [])


def run_split(run, metadata, z, split):
    """``run``'s images for ``z`` cut into parts of the sizes ``split``, each part called with torch's
    RNG seeded from the metadata's seed: the eager generator and a program draw the same random noise."""
    parts = []
    for chunk in torch.split(z, split):
        with torch.random.fork_rng():
            torch.manual_seed(metadata["seed"])
            out = run(*program_inputs(metadata, chunk))
        parts.append(out[0] if isinstance(out, (list, tuple)) else out)
    return torch.cat(parts).float().cpu()


def missing_onnx_package():
    """None when the [onnx] extra's packages import here, else the line that says which does not."""
    missing = extras.missing_modules("onnx")
    if not missing:
        return None
    return (f"ONNX export needs {', '.join(extras.MODULES['onnx'])}, and {missing[0]} does not import here: "
            f"{extras.install_command('onnx')}")


def onnx_conflict(aoti, backend, dtype, device):
    """None, or (argument, what is wrong) for an option that an ONNX export cannot take."""
    if aoti:
        return "--aoti", "expected no --aoti with --format onnx (ONNX Runtime runs the graph)"
    if backend != "reference":
        return "--backend", (f"expected reference with --format onnx (the graph is made of the reference backend's "
                             f"ATen ops), got {backend!r}")
    if dtype != torch.float32:
        return "--dtype", f"expected float32 with --format onnx, got {str(dtype).replace('torch.', '')}"
    if torch.device(device).type != "cpu":
        return "--device", f"expected cpu with --format onnx (the graph is traced and checked on the CPU), got {device}"
    return None


def export(generator, out, *, batch=None, dynamic_batch=False, truncation=1.0, truncation_input=False,
           noise_mode="const", backend="reference", aoti=False, device="cpu", dtype=torch.float32, seed=0,
           description=None, format="pt2", opset=None):
    """Writes the program (AOTInductor package, ONNX graph) to ``out`` and the check file beside it
    (``seed``: of the check's z, and of the noise it draws for random noise); returns the metadata."""
    if format == "onnx":
        conflict = onnx_conflict(aoti, backend, dtype, device)
        if conflict is not None:
            raise ValueError(f"argument {conflict[0]}: {conflict[1]}")
        if (missing := missing_onnx_package()) is not None:
            raise ImportError(missing)
        from training import export_onnx
        opset = ONNX_DEFAULT_OPSET if opset is None else opset
    device = torch.device(device)
    module = ExportableGenerator(generator.to(device), truncation, truncation_input, noise_mode, dtype)
    example_batch = CHECK_SAMPLES if dynamic_batch else batch
    z = torch.randn(example_batch, module.generator.style_dim, generator=torch.Generator().manual_seed(seed + 1))
    z = z.to(device)
    metadata = {"model": description or type(generator).__name__, "size": generator.size,
                "style_dim": module.generator.style_dim, "format": format, "opset": opset, "backend": backend,
                "dtype": str(dtype).replace("torch.", ""), "device": device.type,
                "batch": None if dynamic_batch else batch, "dynamic_batch": dynamic_batch,
                "truncation": float(truncation), "truncation_input": truncation_input, "noise": noise_mode,
                "seed": seed, "noise_shapes": [list(shape) for shape in module.generator.noise_shapes(1)],
                "aoti": aoti, "torch": str(torch.__version__), "pixelfolder_ops": pixelfolder_ops.__version__}
    with torch.no_grad(), pixelfolder_ops.use_backend(backend):
        # The eager calls come first: 'auto' measures its choices there (it does not while tracing),
        # and these are the images the program must give.
        images = [run_split(module, metadata, z, split) for split in check_splits(metadata, len(z))]
    program = export_program(module, metadata, z)
    metadata["requires"] = custom_ops(program)
    metadata["needs_pixelfolder_ops"] = bool(metadata["requires"])
    directory = os.path.dirname(os.path.abspath(out))
    os.makedirs(directory, exist_ok=True)
    # Written under temporary names, then renamed: an interrupted export leaves no half-written program.
    temporary = os.path.join(directory, f".{os.path.basename(out)}.tmp.{format}")
    if format == "onnx":
        metadata.update(export_onnx.versions())
        metadata["graph"] = export_onnx.write(program, temporary, metadata, opset)
    elif aoti:
        # fallback_random: the package draws its noise with ATen's randn, from torch's RNG as eager does.
        with torch._inductor.config.patch(fallback_random=True):
            torch._inductor.aoti_compile_and_package(program, package_path=temporary)
    else:
        torch.export.save(program, temporary, extra_files={METADATA_FILE: json.dumps(metadata)})
    check = {"metadata": metadata, "z": z.cpu(), "images": images}
    torch.save(check, check_path(out) + ".tmp")
    os.replace(temporary, out)
    os.replace(check_path(out) + ".tmp", check_path(out))
    return metadata


class ProgramError(Exception):
    """An exported program that cannot be loaded or run here; the message names the file and why."""


def missing_ops(metadata):
    """The ops of this package the program calls that this process has not registered."""
    if metadata["needs_pixelfolder_ops"]:
        pixelfolder_ops.available_backends()  # loads every backend that can run here, which defines its ops
    return [name for name in metadata["requires"]
            if not hasattr(getattr(torch.ops, name.split(".")[0]), name.split(".")[1])]


def load_program(path, metadata, threads=None):
    """A callable for the program at ``path``: the ExportedProgram's module, the AOTInductor runner, or
    the ONNX Runtime session (``threads``: its intra-op threads)."""
    missing = missing_ops(metadata)
    if missing:
        raise ProgramError(f"{path} calls {', '.join(missing)}, which this Python does not have: the compiled "
                           f"pixelfolder_ops extension is not loaded here "
                           f"({pixelfolder_ops.backend._unavailable_reason('cpu')})")
    kind = ("ONNX model" if metadata["format"] == "onnx" else
            "AOTInductor package" if metadata["aoti"] else "exported program")
    try:
        if metadata["format"] == "onnx":
            from training import export_onnx

            return export_onnx.Runner(path, metadata["noise_shapes"] if metadata["noise"] == "random" else None,
                                      threads)
        if metadata["aoti"]:
            return torch._inductor.aoti_load_package(path)
        return torch.export.load(path).module()
    except Exception as error:  # a truncated or foreign file: zipfile, pickle, protobuf and runtime errors alike
        raise ProgramError(f"{path} is not a readable {kind} ({cli.reason(error)})") from None


def image_error(actual, expected, normwise):
    """Relative error of ``actual``: normwise (||diff|| / ||expected||) or max |diff| / max |expected|."""
    if not normwise:
        return correctness.relative_error(actual, expected)
    if actual.shape != expected.shape or not torch.isfinite(actual).all():
        return math.inf
    return ((actual.double() - expected.double()).norm() / expected.double().norm()).item()


def tolerance_of(metadata):
    """(normwise, tolerance) the check holds the program to."""
    if metadata["format"] == "onnx":
        return True, ONNX_CHECK_TOLERANCE
    return False, CHECK_TOLERANCE[DTYPES[metadata["dtype"]]]


def read_check_file(path):
    """The check file ``check_path(path)``'s contents; ProgramError naming it when it is not one."""
    try:
        saved = torch.load(check_path(path), weights_only=True)
        metadata, z, images = saved["metadata"], saved["z"], saved["images"]
        if len(images) != len(check_splits(metadata, len(z))):
            raise ValueError(f"{len(images)} sets of images for {len(check_splits(metadata, len(z)))} splits")
    except Exception as error:  # truncated, foreign, or written by an older training.export
        raise ProgramError(f"{check_path(path)} is not a check file written by this training.export "
                           f"({cli.reason(error)})") from None
    return saved


def check(path, device=None):
    """Reloads the program at ``path`` and runs it on the check file's z, whole and (for a symbolic
    batch) one at a time and in two uneven parts; returns (worst relative error, tolerance, the batch
    sizes run)."""
    saved = read_check_file(path)
    metadata = saved["metadata"]
    device = torch.device(device or metadata["device"])
    run = load_program(path, metadata)
    z = saved["z"].to(device)
    splits = check_splits(metadata, len(z))
    normwise, tolerance = tolerance_of(metadata)
    with torch.no_grad():
        worst = max(image_error(run_split(run, metadata, z, split), expected, normwise)
                    for split, expected in zip(splits, saved["images"]))
    return worst, tolerance, sorted({size for split in splits for size in split})


def parse_args(argv=None):
    parser = cli.CommandLineParser(prog="python -m training.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", nargs="?", type=cli.existing_path,
                        help="any network file training.convert reads (our checkpoints and run folders, "
                             "official PixelFolder, NVlabs, rosinality and CIPS files)")
    parser.add_argument("--out", type=cli.output_file, help="where to write the program (e.g. generator.pt2)")
    parser.add_argument("--format", choices=FORMATS,
                        help="pt2: a torch.export program (or --aoti package); onnx: an ONNX graph "
                             "(default: onnx for an --out ending in .onnx, else pt2)")
    parser.add_argument("--opset", type=cli.integer(*ONNX_OPSETS),
                        help=f"the ONNX graph's opset (default {ONNX_DEFAULT_OPSET})")
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
    parser.add_argument("--noise", choices=NOISE_MODES, default="const",
                        help="const: the noise stored with the model (deterministic); random: fresh noise at "
                             "every call")
    parser.add_argument("--backend", choices=("reference",) + tuple(b for b in pixelfolder_ops.backend.KNOWN_BACKENDS
                                                                      if b != "reference") + ("auto",),
                        default="reference", help="reference: ATen ops only, runs with torch alone")
    parser.add_argument("--aoti", action="store_true", help="compile an AOTInductor package instead")
    parser.add_argument("--device", type=cli.device, default="cpu")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    parser.add_argument("--size", type=cli.network_size,
                        help="the resolution the checkpoint's networks must have (default: any)")
    args = parser.parse_args(argv)
    if args.check is None and (args.checkpoint is None or args.out is None):
        parser.error("expected CHECKPOINT and --out (to export), or --check PROGRAM (to verify)")
    if args.check is not None and (args.checkpoint, args.out, args.format, args.opset) != (None,) * 4:
        parser.error("argument --check: expected alone (it verifies an exported program), got CHECKPOINT, --out, "
                     "--format or --opset too")
    if args.check is not None and not os.path.isfile(check_path(args.check)):
        parser.error(f"argument --check: expected {check_path(args.check)} beside the program (written by the export), "
                     f"found none")
    if args.format is None and args.out is not None:
        args.format = "onnx" if args.out.lower().endswith(".onnx") else "pt2"
    if args.format == "onnx":
        args.device = "cpu" if args.device == "auto" else args.device
        conflict = onnx_conflict(args.aoti, args.backend, DTYPES[args.dtype], args.device)
        if conflict is not None:
            parser.error(f"argument {conflict[0]}: {conflict[1]}")
    elif args.opset is not None:
        parser.error(f"argument --opset: expected only with --format onnx, got --format {args.format or 'pt2'}")
    if args.backend not in ("reference", "auto"):
        reason = pixelfolder_ops.backend._unavailable_reason(args.backend)
        if reason is not None:
            parser.error(f"argument --backend: backend '{args.backend}' is unavailable here: {reason}")
    return args


def report_check(path, metadata):
    """Checks the program at ``path`` (``metadata``: its check file's) and prints the verdict in one line."""
    error, tolerance, batches = check(path)
    verdict = "matches" if error <= tolerance else "DOES NOT match"
    measure = "normwise relative error" if tolerance_of(metadata)[0] else "relative error"
    print(f"{path} {verdict} the eager generator's images: worst {measure} {error:.2e} (tolerance "
          f"{tolerance:.0e}) at batch sizes {', '.join(map(str, batches))}")
    return error <= tolerance


def describe(metadata):
    """What the command wrote, for its one line."""
    if metadata["format"] == "onnx":
        graph = metadata["graph"]
        return (f"ONNX graph (opset {graph['opset']}, {graph['nodes']} nodes of {len(graph['operators'])} operator "
                f"types, {graph['stored_values']:,} stored values) of {metadata['model']}, runs with ONNX Runtime alone")
    kind = "AOTInductor package" if metadata["aoti"] else "torch.export program"
    needs = (f"needs pixelfolder_ops ({', '.join(metadata['requires'])})" if metadata["needs_pixelfolder_ops"]
             else "runs with torch alone")
    return f"{kind} of {metadata['model']}, {needs}"


def main(argv=None):
    args = parse_args(argv)
    if args.check is not None:
        try:
            metadata = read_check_file(args.check)["metadata"]
        except ProgramError as error:
            cli.fail(error)
        if metadata["format"] == "onnx" and (missing := missing_onnx_package()) is not None:
            cli.fail(missing)
        if metadata["needs_pixelfolder_ops"]:
            print(f"{args.check} calls {', '.join(metadata['requires'])}: pixelfolder_ops is imported to run it")
        try:
            matched = report_check(args.check, metadata)
        except ProgramError as error:
            cli.fail(error)
        raise SystemExit(0 if matched else 1)
    if args.format == "onnx" and (missing := missing_onnx_package()) is not None:
        cli.fail(missing)
    from training.generate import load_generator

    device = cli.resolved_device(args.device)
    try:
        generator = load_generator(args.checkpoint, size=args.size, device=device)
    except (ValueError, OSError) as error:
        cli.fail(error)
    description = f"{type(generator).__name__} {generator.size}x{generator.size}"
    metadata = export(generator, args.out, batch=args.batch, dynamic_batch=args.dynamic_batch,
                      truncation=args.truncation, truncation_input=args.truncation_input, noise_mode=args.noise,
                      backend=args.backend, aoti=args.aoti, device=device, dtype=DTYPES[args.dtype],
                      description=description, format=args.format, opset=args.opset)
    print(f"wrote {args.out}: {describe(metadata)}; its check file is {check_path(args.out)}")
    if not report_check(args.out, metadata):
        # torch 2.13's AOTInductor fixes the batch of a conv whose groups depend on it (the reference
        # backend's per-image grouped conv) and then ignores the input's batch: never leave such a program.
        for path in (args.out, check_path(args.out)):
            os.remove(path)
        advice = (" (AOTInductor fixes the batch of the reference backend's per-image grouped conv: use a fused "
                  "--backend or a fixed --batch)" if args.aoti and args.dynamic_batch else "")
        cli.fail(f"the exported program does not give the eager images, so it was removed{advice}")


if __name__ == "__main__":
    main()
