"""The ``tinysr`` command line.

Every command has ``--help``. Bad input (a missing folder, an unknown model, a bad scale, an
unreadable image) prints one line ``tinysr: error: ...`` and exits with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from . import datasets
from ._version import __version__
from .bench import get_suite, run_bench
from .compress import binary_weight_bytes, deployable
from .compress.deploy import deploy_form
from .convert import FORMATS as CHECKPOINT_FORMATS
from .convert import load_external
from .data import BenchmarkSet, LRCache
from .datasets import resolve as resolve_data
from .errors import TinySRError
from .evaluate import evaluate
from .export import check_onnx, export_onnx
from .files import atomic_write, remove_stale_temps, sha256_of
from .inference import AUTO_TILE, AUTO_TILE_PIXELS, default_tile_pad, tile_size, upscale
from .io import MAX_PIXELS, is_image_file, list_images, read_image, write_image
from .model_file import PRECISIONS, load, save
from .models import create_model, list_models, model_spec
from .models.registry import SUPPORTED_SCALES
from .profile import profile
from .progress import progress
from .runtime import retain_freed_memory
from .train import load_config, train
from .train.config import find_recipe, list_recipes
from .workflows.pruning import METHODS as PRUNE_METHODS
from .workflows.pruning import run_pruning
from .workflows.quickstart import run_quickstart
from .zoo import default_upscaler, is_zoo_name, list_pretrained


def _size(text: str) -> tuple[int, int]:
    """'WxH' -> (H, W)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size WxH (e.g. 320x180)") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: width and height must be positive")
    return h, w


def _count(minimum: int):
    """An argparse type: an integer of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value}: must be at least {minimum}")
        return value

    return parse


def _device(text: str) -> str:
    """A torch device this machine has."""
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device (cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text}: no CUDA device is available here")
    return text


def _scale(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer scale") from None

    if value not in SUPPORTED_SCALES:
        raise argparse.ArgumentTypeError(f"{value}: supported scales are {', '.join(map(str, SUPPORTED_SCALES))}")
    return value


def resolve_model(name_or_path: str, scale: int | None, device: str = "cpu", warn: bool = True):
    """A model file (whose scale must be ``scale``, if given) or a registry name (built for ``scale``)."""

    path = Path(name_or_path)
    if is_zoo_name(name_or_path) or path.is_file() or path.suffix == ".safetensors":
        model = load(name_or_path, device=device)  # a missing file or zoo entry is reported by load, naming it
        file_scale = model_spec(model).scale
        if scale is not None and file_scale != scale:
            raise TinySRError(f"{name_or_path}: model is for x{file_scale}, but --scale {scale} was asked for")
        return model
    if name_or_path not in list_models():
        raise TinySRError(f"unknown model {name_or_path!r}: not a model file nor one of {', '.join(list_models())}")
    if scale is None:
        raise TinySRError(f"--scale is required with a registry name ({name_or_path})")
    model = create_model(name_or_path, scale=scale).to(device).eval()
    if warn and any(True for _ in model.parameters()):
        print(f"tinysr: warning: {name_or_path} is untrained (random weights); pass a model file for real results", file=sys.stderr)
    return model


def _write_json(path: str, payload) -> None:

    text = json.dumps(payload, indent=2)
    atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text + "\n"))


def cmd_test(args: argparse.Namespace) -> int:

    for folder in args.data:
        if not resolve_data(folder).is_dir():
            raise TinySRError(f"--data {folder}: no such folder")
    cache = None if args.no_cache else LRCache(args.cache_dir)
    scores = []
    for scale in args.scale:
        model = resolve_model(args.model, scale, device=args.device, warn=scale == args.scale[0])
        for folder in args.data:
            dataset = BenchmarkSet(folder, scale, lr_from_files=args.lr_from_files, cache=cache)
            scores.append(evaluate(model, dataset, save_dir=args.save_dir, progress=not args.quiet))
    print(f"{'dataset':<16}{'scale':>6}{'PSNR':>10}{'SSIM':>9}{'images':>8}")
    for s in scores:
        print(f"{s.dataset:<16}{'x' + str(s.scale):>6}{s.psnr:>10.3f}{s.ssim:>9.4f}{s.images:>8}")
    if args.json:
        _write_json(args.json, [s.as_dict() for s in scores])
    return 0


def _human(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}" if float(n).is_integer() else f"{n:.2f}"


def cmd_profile(args: argparse.Namespace) -> int:
    if args.hr_size is not None:
        h, w = args.hr_size
        # An HR size the scale does not divide is floored, as the papers do (1280x720 at x3: a
        # 426x240 LR input, 1278x720 output).
        lr_size = (h // args.scale, w // args.scale)
        if min(lr_size) < 1:
            raise TinySRError(f"--hr-size {w}x{h} is smaller than --scale {args.scale}")
    else:
        lr_size = args.lr_size
    model = resolve_model(args.model, args.scale, warn=False)
    result = profile(model, lr_size)
    if args.json:
        _write_json(args.json, {"model": args.model, "scale": args.scale, "lr_size": [lr_size[1], lr_size[0]], **result.summary()})
        return 0
    hr = f" (HR {lr_size[1] * args.scale}x{lr_size[0] * args.scale})" if args.hr_size is not None else ""
    print(f"{args.model} x{args.scale}, LR input {lr_size[1]}x{lr_size[0]}{hr}")
    print(f"{'layer':<40}{'type':<20}{'params':>10}{'binary':>10}{'MACs':>10}{'BOPs':>10}")
    for layer in result.layers:
        print(
            f"{layer.name[:39]:<40}{layer.kind[:19]:<20}{_human(layer.params_fp):>10}{_human(layer.params_binary):>10}"
            f"{_human(layer.flops):>10}{_human(layer.bops):>10}"
        )
    s = result.summary()
    print(
        f"total: params {_human(s['params'])} (fp {_human(s['params_fp'])}, binary {_human(s['params_binary'])} at 1/32), "
        f"FLOPs {_human(s['flops'])}, BOPs {_human(s['bops'])}, OPs {_human(s['ops'])}"
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:

    if args.config is None:
        if not args.resume:
            raise TinySRError("-c/--config is required (or --resume with a run folder that holds config.yaml)")
        args.config = str(Path(args.output) / "config.yaml")
    config = load_config(args.config, overrides=args.set or [])
    final = train(config, args.output, device=args.device, resume=args.resume, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"model: {final}")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:

    config = load_config(args.config, overrides=args.set or [])
    final = run_pruning(
        config,
        args.output,
        getattr(args, "from"),
        args.ratio,
        args.method,
        args.prune_lr,
        args.device,
        not args.quiet,
        args.channel_multiple,
    )
    print(f"model: {final}")
    return 0


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{value}: the pruning ratio must be in [0, 1)")
    return value


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (through links, '..' and the like)."""
    if a.exists() and b.exists():
        return a.samefile(b)
    return a.resolve() == b.resolve()


def _output_names(images: list[Path], folder: Path) -> list[tuple[Path, Path]]:
    """One PNG per input image in ``folder``; inputs that share a stem (x.png, x.jpg) get their
    extension in the name (x_png.png, x_jpg.png), so no result replaces another."""
    stems = [p.stem for p in images]
    return [(p, folder / (f"{p.stem}_{p.suffix.lstrip('.').lower()}.png" if stems.count(p.stem) > 1 else f"{p.stem}.png")) for p in images]


def _refuse_overwriting_inputs(pairs: list[tuple[Path, Path]], overwrite: bool) -> None:
    if overwrite:
        return
    for image, out in pairs:
        if _same_file(image, out):
            raise TinySRError(f"-o {out} would replace the input {image}; choose another output or pass --overwrite")


def cmd_upscale(args: argparse.Namespace) -> int:
    src, dst = Path(args.input), Path(args.output)
    if not src.exists():
        raise TinySRError(f"-i {src}: no such file or folder")
    if src.is_dir():
        pairs = _output_names(list_images(src), dst)
        if not pairs:
            raise TinySRError(f"-i {src}: no images in this folder")
    else:
        if not is_image_file(src):
            raise TinySRError(f"-i {src}: not an image file (PNG/BMP/JPEG/TIFF/WebP)")
        out = dst / f"{src.stem}.png" if dst.is_dir() or args.output.endswith(("/", "\\")) else dst
        pairs = [(src, out)]
    _refuse_overwriting_inputs(pairs, args.overwrite)
    model = resolve_model(args.model or default_upscaler(args.scale or 2), args.scale, device=args.device).eval()

    pad, unreadable = args.tile_pad, []
    for image_path, out_path in progress(pairs, desc="upscale", disable=args.quiet or len(pairs) == 1):
        try:
            image = read_image(image_path, max_pixels=args.max_pixels)
        except TinySRError as exc:
            if len(pairs) == 1:
                raise
            print(f"tinysr: error: {exc}", file=sys.stderr)  # one line per bad image; the good ones go on
            unreadable.append(image_path)
            continue
        if pad is None and tile_size(image.shape, args.tile) is not None:
            pad, exact = default_tile_pad(model)  # found once, on the first image that is tiled
            if not exact:
                print(
                    f"tinysr: warning: {args.model} uses image-wide statistics: tiled output differs slightly from "
                    f"the whole image's (tile pad {pad})",
                    file=sys.stderr,
                )
        remove_stale_temps(out_path.parent, {out_path.name})  # a killed earlier write of this output
        write_image(out_path, upscale(model, image, tile=args.tile, tile_pad=pad))
        if len(pairs) == 1:
            print(out_path)
    if len(pairs) > 1:
        written = len(pairs) - len(unreadable)
        print(f"{written} images written to {dst}" + (f"; {len(unreadable)} could not be read (see above)" if unreadable else ""))
    return 2 if unreadable else 0


def cmd_deploy(args: argparse.Namespace) -> int:
    out = Path(args.output)
    if not args.overwrite and _same_file(Path(args.model), out):
        raise TinySRError(f"-o {args.output} would replace the model it deploys ({args.model}); choose another output or pass --overwrite")
    if not args.overwrite and out.exists():
        raise TinySRError(f"-o {args.output} exists; choose another output or pass --overwrite")
    model = load(args.model)
    form = deploy_form(model, "pack" if args.pack else "auto")
    name = model_spec(model).name
    if form == "none" and args.precision == "float32":
        spec = model_spec(model)
        done = [word for name, word in (("pack", "packed"), ("reparameterize", "merged")) if spec.transformed_by(name)]
        state = f"is already {done[0]}" if done else "has neither re-parameterizable blocks nor binary convs"
        raise TinySRError(
            f"deploy: {args.model} ({spec.name}) {state}: it runs as it is, there is nothing to deploy (--precision stores it smaller)"
        )
    deployed = deployable(model, form) if form != "none" else model
    save(deployed, out, precision=args.precision)
    stored = f"{out.stat().st_size / 1e6:.2f} MB in {args.precision}"
    if form == "none":
        print(f"{args.output}: {name} as trained, {stored}")
        return 0
    if form == "pack":
        before, after = binary_weight_bytes(model), binary_weight_bytes(deployed)
        print(
            f"{args.output}: {name} with bit-packed binary convs; their weights "
            f"{before / 1e3:.1f} kB -> {after / 1e3:.1f} kB ({before / after:.1f}x smaller); {stored}"
        )
        return 0
    before, after = profile(model, (180, 320)), profile(deployed, (180, 320))
    print(
        f"{args.output}: {name} merged into plain convs, params {before.params / 1e3:.1f}K -> {after.params / 1e3:.1f}K, "
        f"FLOPs at 320x180 {before.flops / 1e9:.2f}G -> {after.flops / 1e9:.2f}G; {stored}"
    )
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise TinySRError(f"-o {out} exists; choose another output or pass --overwrite")
    model, options = load_external(args.checkpoint, args.format, args.res_scale, args.scale)
    source = {"format": args.format, "file": Path(args.checkpoint).name, "sha256": sha256_of(args.checkpoint), **options}
    save(model, out, extra={"converted_from": json.dumps(source, sort_keys=True)})
    spec = model_spec(model)
    inferred = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in options.items() if k != "scale")
    print(f"{out}: {spec.name} x{options['scale']} ({inferred}) from {args.checkpoint} ({args.format})")
    return 0


def cmd_export(args: argparse.Namespace) -> int:

    model = resolve_model(args.model, args.scale)
    path = export_onnx(model, args.output, lr_size=args.lr_size, opset=args.opset)
    size = f"{args.lr_size[1]}x{args.lr_size[0]} input" if args.lr_size else "any input size"
    print(f"{path}: ONNX opset {args.opset}, {size}")
    if not args.no_check:
        print(f"onnxruntime vs PyTorch: max abs diff {check_onnx(model, path):.2e}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:

    suite = get_suite(args.suite)
    run_bench(suite, args.output, test_sets=args.test, device=args.device, progress=not args.quiet, plots=not args.no_plots)
    out = Path(args.output)
    print(
        f"tables: {out / 'results.md'}, {out / 'results.csv'}"
        + ("" if args.no_plots else f"; plots: {out}/psnr_vs_ops_x*.png, psnr_vs_ms_x*.png, crops_x*.png")
    )
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:

    if args.iterations is not None and not args.train:
        raise TinySRError("--iterations: only with --train (the default quickstart trains nothing)")
    iterations = 3000 if args.iterations is None else args.iterations
    run_quickstart(args.output, iterations=iterations, data=args.data, device=args.device, progress=not args.quiet, train=args.train)
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    if args.action == "list":
        print(f"{'name':<10}{'images':>7}  {'present':<8} source; terms")
        for entry in datasets.REGISTRY.values():
            present = "yes" if datasets.is_present(entry.name, args.dir) else "no"
            print(f"{entry.name:<10}{entry.images:>7}  {present:<8} {entry.source}; {entry.terms}")
        return 0
    if not args.names:
        raise TinySRError(f"tinysr data {args.action}: name at least one set ({', '.join(datasets.REGISTRY)})")
    for name in args.names:
        if args.action == "path":
            print(datasets.set_path(name, args.dir))
        else:
            datasets.get(name, args.dir, archive=args.archive, log=(lambda msg: None) if args.quiet else print)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    if not args.pretrained:
        print("\n".join(list_models()))
        return 0
    print(f"{'name':<28}{'scale':>6}  {'form':<11}{'Set5':>8}{'Set14':>8}{'iterations':>12}  recipe")
    for e in list_pretrained():
        scores = e.get("scores", {})
        set5, set14 = (f"{scores[k]['psnr']:.2f}" if k in scores else "-" for k in ("Set5", "Set14"))
        print(
            f"{'zoo:' + e['name']:<28}{'x' + str(e['scale']):>6}  {e.get('form', '-'):<11}{set5:>8}{set14:>8}{e.get('iterations', 0):>12,}  {e.get('recipe', '-')}"
        )
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    for name in list_recipes():
        first = next((ln[1:].strip() for ln in find_recipe(name).read_text().splitlines() if ln.startswith("#")), "")
        print(f"{name:<36}{first}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``tinysr: error: ...``) and exit status 2."""

    def error(self, message: str):
        command = self.prog.split()[-1]
        where = "" if command == "tinysr" else f"{command}: "
        self.exit(2, f"tinysr: error: {where}{message}\n")


def _add_device_and_quiet(p: argparse.ArgumentParser, default_device: str | None = None) -> None:
    """The options every command that runs a model shares."""
    where = "cpu" if default_device == "cpu" else "cuda if available, else cpu"
    p.add_argument("--device", type=_device, default=default_device, help=f"torch device (default: {where})")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:

    parser = _Parser(prog="tinysr", description="Efficient single-image super-resolution.")
    parser.add_argument("--version", action="version", version=f"tinysr {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("test", help="evaluate a model on benchmark sets (PSNR/SSIM, SPEC §1)")
    p.add_argument("--model", "-m", required=True, help="registry name (e.g. bicubic), model file or zoo:NAME")
    p.add_argument("--data", "-d", nargs="+", required=True, metavar="DIR", help="benchmark folders (HR images, or holding HR/)")
    p.add_argument("--scale", "-s", nargs="+", type=_scale, required=True, metavar="S")
    p.add_argument("--json", metavar="FILE", help="write the scores as a JSON list")
    p.add_argument("--save-dir", metavar="DIR", help="write the SR images under DIR/dataset/xS/")
    p.add_argument("--lr-from-files", action="store_true", help="read LR from LR_bicubic/XS instead of generating it")
    p.add_argument("--no-cache", action="store_true", help="do not cache generated LR images on disk")
    p.add_argument("--cache-dir", metavar="DIR", help="LR cache folder (default $TINYSR_CACHE/lr or ~/.cache/tinysr/lr)")
    _add_device_and_quiet(p, default_device="cpu")
    p.set_defaults(func=cmd_test)

    p = sub.add_parser("profile", help="count params, FLOPs, BOPs and OPs (SPEC §3)")
    p.add_argument("--model", "-m", required=True, help="registry name, model file or zoo:NAME")
    p.add_argument("--scale", "-s", type=_scale, required=True)
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--lr-size", type=_size, metavar="WxH", help="LR input size (binary SR tables use 320x180)")
    size.add_argument("--hr-size", type=_size, metavar="WxH", help="HR output size, floored to the scale (FP SR tables use 1280x720)")
    p.add_argument("--json", metavar="FILE", help="write the totals as JSON")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("upscale", help="super-resolve an image or a folder of images")
    p.add_argument("--input", "-i", required=True, help="image file or folder")
    p.add_argument("--output", "-o", required=True, help="output file, or folder (for a folder input, or ending in /)")
    p.add_argument(
        "--model",
        "-m",
        help="model file or zoo:NAME (or a registry name with --scale, e.g. bicubic); default: the zoo's default for the scale",
    )
    p.add_argument("--scale", "-s", type=_scale, help="scale (taken from the model file when omitted; 2 without a model)")
    p.add_argument(
        "--tile",
        "-t",
        type=_count(1),
        metavar="N",
        help=f"process N x N LR tiles to bound memory (default: images over {AUTO_TILE_PIXELS / 1e6:.0f} Mpixel in {AUTO_TILE} x {AUTO_TILE} tiles)",
    )
    p.add_argument(
        "--tile-pad",
        type=_count(0),
        metavar="P",
        help="LR context around each tile (default: the model's receptive reach, from its layers and checked on a probe, so tiles equal the whole image)",
    )
    p.add_argument(
        "--max-pixels",
        type=_count(1),
        default=MAX_PIXELS,
        metavar="N",
        help=f"refuse input images that declare more pixels (decompression bombs; default {MAX_PIXELS:,})",
    )
    p.add_argument("--overwrite", action="store_true", help="allow an output to replace an input image")
    _add_device_and_quiet(p, default_device="cpu")
    p.set_defaults(func=cmd_upscale)

    p = sub.add_parser("train", help="train a model from a YAML recipe (resumable; torchrun for several processes)")
    p.add_argument("--config", "-c", metavar="RECIPE", help="a shipped recipe's name (tinysr recipes) or a YAML recipe file")
    p.add_argument("--output", "-o", required=True, metavar="RUN_DIR", help="run folder: log, checkpoints, model files")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a recipe key, e.g. train.iterations=1000 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its latest checkpoint")
    _add_device_and_quiet(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("prune", help="prune a trained model into a smaller dense one (ASSL, L1-norm or scratch), then fine-tune")
    p.add_argument(
        "--config",
        "-c",
        required=True,
        metavar="RECIPE",
        help="fine-tuning recipe, a name or a file (may hold an assl callback entry with ASSL's options)",
    )
    p.add_argument("--output", "-o", required=True, metavar="RUN_DIR", help="run folder (rerun the same command to resume)")
    p.add_argument("--from", required=True, metavar="MODEL", help="the trained model to prune (a file or zoo:NAME)")
    p.add_argument("--ratio", type=_ratio, required=True, help="fraction of each layer's filters to remove, e.g. 0.5")
    p.add_argument(
        "--channel-multiple",
        type=_count(1),
        metavar="N",
        help="round every kept width to a multiple of N (16 suits AVX-512 CPUs, 8 AVX2): faster on a CPU than the widths between",
    )
    p.add_argument(
        "--method",
        choices=PRUNE_METHODS,
        default="assl",
        help="assl (default); l1: L1-norm, no regularisation, tied convs keep the same channels; "
        "l1_unaligned: the official ASSL code's L1, each conv its own; scratch: l1's widths, fresh weights",
    )
    p.add_argument("--prune-lr", type=float, default=2e-4, help="constant learning rate of ASSL's regularisation phase (paper: 2e-4)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a recipe key (repeatable)")
    _add_device_and_quiet(p)
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser(
        "deploy", help="merge a re-parameterizable model (repsr, ecbsr, repvgg_sr) into a plain network, or bit-pack a 1-bit model"
    )
    p.add_argument("--model", "-m", required=True, help="trained model file or zoo:NAME")
    p.add_argument("--output", "-o", required=True, help="output model file")
    p.add_argument(
        "--pack", action="store_true", help="bit-pack the binary convs (the default for every model without re-parameterizable blocks)"
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="float32",
        help="how the file stores floats (tinysr.save): float16 in half the bytes, int8 weights with a scale per "
        "output channel in about a quarter; check the scores of a smaller file with tinysr test (default float32)",
    )
    p.add_argument("--overwrite", action="store_true", help="allow the output to replace an existing file, the input model included")
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser(
        "convert", help="a checkpoint written by another codebase (EDSR-PyTorch, BasicSR, ECBSR, BBCU, FABNet) -> a tinysr model file"
    )
    p.add_argument("checkpoint", help="the .pt / .pth state dict (loaded without running code: weights_only)")
    p.add_argument("--format", "-f", required=True, choices=sorted(CHECKPOINT_FORMATS), help="the codebase that wrote it")
    p.add_argument("--output", "-o", required=True, help="output model file")
    p.add_argument(
        "--res-scale", type=float, help="EDSR's residual scaling, which checkpoints do not store (default: 0.1 for 32x256, else 1)"
    )
    p.add_argument(
        "--scale", "-s", type=int, help="the scale it was trained for, where the file cannot tell it (FABNet's); elsewhere checked"
    )
    p.add_argument("--overwrite", action="store_true", help="allow the output to replace an existing file")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("export", help="export a model to ONNX (checked with onnxruntime)")
    p.add_argument("--model", "-m", required=True, help="model file or zoo:NAME (or a registry name with --scale)")
    p.add_argument("--output", "-o", required=True, help="output .onnx file")
    p.add_argument("--scale", "-s", type=_scale, help="scale (taken from the model file when omitted)")
    p.add_argument(
        "--lr-size", type=_size, metavar="WxH", help="export for this input size only (default: any size; required for VDSR/FABNet)"
    )
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--no-check", action="store_true", help="do not compare onnxruntime's output with PyTorch's")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("bench", help="train (or reuse), evaluate and profile every method of a suite; tables and plots")
    p.add_argument(
        "--suite",
        required=True,
        help="smoke (seconds), cpu (x2, every family, one evening on 2 cores), paper (the papers' recipes; GPU) "
        "or zoo (the trained models tinysr ships, as stored; no training)",
    )
    p.add_argument("--output", "-o", required=True, metavar="DIR", help="run folders, results.csv, results.md, plots (rerun to resume)")
    p.add_argument("--test", nargs="+", metavar="FOLDER", help="test folders (default: the suite's, Set5 and Set14)")
    p.add_argument("--no-plots", action="store_true", help="tables only (plots need matplotlib)")
    _add_device_and_quiet(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "quickstart", help="super-resolve sample photographs with the zoo's model of each family and compare them with bicubic"
    )
    p.add_argument("--output", "-o", default="quickstart", metavar="DIR", help="where everything goes (default ./quickstart)")
    p.add_argument("--train", action="store_true", help="train a small EDSR-baseline on the photographs instead (minutes)")
    p.add_argument("--iterations", type=int, help="training iterations with --train (default 3000)")
    p.add_argument("--data", metavar="DIR", help="your own photographs instead of scikit-image's (the last 2 are held apart)")
    _add_device_and_quiet(p)
    p.set_defaults(func=cmd_quickstart)

    p = sub.add_parser("data", help="the standard data sets by name: list them, fetch and check them, or print their folder")
    p.add_argument("action", choices=("list", "get", "path"), help="list the sets; get NAME...: download and check; path NAME...")
    p.add_argument("names", nargs="*", metavar="NAME", help=f"standard sets ({', '.join(datasets.REGISTRY)})")
    p.add_argument("--dir", metavar="DIR", help="where the sets live (default $TINYSR_CACHE/datasets or ~/.cache/tinysr/datasets)")
    p.add_argument("--archive", metavar="FILE", help="get: the set's archive, already downloaded, instead of downloading it")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("models", help="list the registered model names, or the trained ones the zoo ships")
    p.add_argument("--pretrained", action="store_true", help="list the zoo's trained models (-m zoo:NAME) with their scores")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("recipes", help="list the shipped training recipes (train -c NAME takes a name or a YAML file)")
    p.set_defaults(func=cmd_recipes)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.func in (cmd_test, cmd_upscale, cmd_bench):  # inference: reuse activation memory (runtime.py)
        retain_freed_memory()
    try:
        return args.func(args)
    except TinySRError as exc:
        print(f"tinysr: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a read-only folder, a full disk, a file where a folder is needed: say which, in one line
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"tinysr: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tinysr: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
