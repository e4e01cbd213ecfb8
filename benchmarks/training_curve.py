"""Print a run's validation curve (PSNR vs iterations and training time, carried across resumes)
and its throughput as Markdown.

python benchmarks/training_curve.py runs/edsr_baseline_x2_cpu [--target 35.5]
"""

from __future__ import annotations

import argparse

from tinysr.train import read_log


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--target", type=float, help="report when validation PSNR first reaches this value")
    args = parser.parse_args()
    records = read_log(args.run_dir)
    val = [r for r in records if "val_psnr" in r]
    train = [r for r in records if "loss" in r]
    print("| iteration | wall time (min) | Set5 PSNR (dB) | SSIM |")
    print("|---:|---:|---:|---:|")
    for r in val:
        print(f"| {r['iter']} | {r['time'] / 60:.1f} | {r['val_psnr']:.3f} | {r['val_ssim']:.4f} |")
    if train:
        last = train[-1]
        print(
            f"\nthroughput of the last process: {last['it_s']:.2f} iterations/s, {last['img_s']:.1f} patches/s "
            f"({last['iter']} iterations in {last['time'] / 60:.1f} min of training, validation included)"
        )
    if args.target is not None:
        hit = next((r for r in val if r["val_psnr"] >= args.target), None)
        print(f"first >= {args.target} dB: " + (f"iteration {hit['iter']}, {hit['time'] / 60:.1f} min" if hit else "never"))


if __name__ == "__main__":
    main()
