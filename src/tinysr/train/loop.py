"""The training engine: iteration-based, resumable, optionally distributed; methods plug in by name.

One step reads top to bottom: set the learning rate, forward, loss terms, backward, clip, step,
EMA, callbacks, log, validate, checkpoint. The engine knows no method: everything a method needs
comes from the loss terms and callbacks named in the recipe (DESIGN.md principle 2).

Resume is exact by construction: the learning rate is a function of the iteration
(:mod:`.schedule`), every training sample is a function of ``(seed, sample number)``
(:class:`tinysr.data.TrainPatches`), and the checkpoint holds model, optimizer, EMA, callback
states and RNG states. A run of N iterations and a run stopped (even by ``kill -9``) and resumed
end with identical weights on CPU.

Files in the run folder: ``config.yaml`` (the resolved recipe), ``inputs.json`` (the SHA-256 of
each file the recipe reads, :mod:`.run_inputs`), ``log.jsonl`` (one JSON object a line),
``checkpoints/state.pt`` (latest training state), ``best.safetensors`` (best validation PSNR),
``model.safetensors`` (final weights; the EMA weights when EMA is on), ``tb/`` when TensorBoard is
installed.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from .. import compress  # noqa: F401  (registers the compression callbacks, e.g. assl)
from ..data import BenchmarkSet, LRCache, TrainPatches
from ..errors import TinySRError
from ..evaluate import evaluate
from ..model_file import atomic_write, load, read_metadata, save
from ..models import create_model
from ..models.registry import resolved_options
from .callbacks import build_callback
from .checkpoint import load_state, save_state, state_path
from .config import Config
from .distributed import DistInfo, barrier, cleanup, init_distributed, weights_in_sync
from .ema import EMA
from .losses import Step, build_loss
from .run_inputs import record_inputs, stale_input
from .schedule import lr_at


class SampleStream(Sampler):
    """Global sample numbers for iterations ``start..total-1``: rank ``r`` of ``w`` takes, at iteration
    ``i``, samples ``(i*w + r)*b .. (i*w + r)*b + b - 1``. The union over ranks is what a single
    process with batch ``w*b`` would draw."""

    def __init__(self, start: int, total: int, batch_size: int, rank: int = 0, world_size: int = 1):
        self.start, self.total, self.batch_size, self.rank, self.world_size = start, total, batch_size, rank, world_size

    def __iter__(self):
        for it in range(self.start, self.total):
            base = (it * self.world_size + self.rank) * self.batch_size
            yield from range(base, base + self.batch_size)

    def __len__(self) -> int:
        return (self.total - self.start) * self.batch_size


class NonFiniteLoss(TinySRError):
    pass


def _log_iteration(line: str) -> int | None:
    """The iteration of a log line, or None for a blank or damaged line."""
    try:
        return int(json.loads(line).get("iter", 0))
    except (ValueError, AttributeError):
        return None


class Trainer:
    """Trains ``config`` into ``run_dir``. Attributes callbacks may use: ``config``, ``model`` (the
    plain module), ``optimizer``, ``iteration``, ``device``, ``dist``, ``run_dir``, ``train_data``."""

    def __init__(self, config: Config, run_dir: str | Path, device: str = "cpu", resume: bool = False, progress: bool = True):
        self.config, self.run_dir, self.resume, self.progress = config, Path(run_dir), resume, progress
        self.dist: DistInfo = init_distributed(device)
        self.device = torch.device(f"cuda:{self.dist.local_rank}" if device.startswith("cuda") and self.dist.enabled else device)
        self.iteration = 0
        self.best = {"psnr": -math.inf, "iteration": -1}
        self._check_run_dir()

    # ----------------------------------------------------------------------------------- set-up
    def _check_run_dir(self) -> None:
        has_state = state_path(self.run_dir).is_file()
        if has_state and not self.resume:
            raise TinySRError(f"{self.run_dir}: holds a run already; pass --resume to continue it, or choose another -o folder")
        if self.resume and not has_state:
            raise TinySRError(f"{state_path(self.run_dir)}: no training state to resume from")

    def _build(self) -> None:
        c = self.config
        torch.manual_seed(c.seed)
        self.model = self._initial_model().to(self.device)
        cache = LRCache()
        say = (lambda msg: print(msg, file=sys.stderr)) if self.dist.is_main else (lambda msg: None)
        self.train_data = TrainPatches(c.data.train, c.scale, c.data.patch_size, c.data.repeat, c.seed, cache, warn=say)
        self.val_data = BenchmarkSet(c.data.val, c.scale, cache=cache, max_images=c.data.val_max_images) if c.data.val else None
        self.loss_terms = [(t.name, t.weight, build_loss(t.name, t.kwargs)) for t in c.train.loss]
        self.callbacks = [build_callback(cb.name, cb.kwargs) for cb in c.callbacks]
        for cb in self.callbacks:  # may change the model (e.g. insert layers) before the optimizer sees it
            cb.on_train_start(self)
        for _, _, term in self.loss_terms:  # a method's loss may need the model (hooks, a teacher)
            if hasattr(term, "setup"):
                term.setup(self)
        params = [p for p in self.model.parameters() if p.requires_grad]
        o = c.train.optimizer
        opt_cls = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
        self.optimizer = opt_cls(params, lr=c.train.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)
        self.ema = EMA(self.model, c.train.ema) if c.train.ema else None
        use_fp16 = c.train.amp == "fp16" and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if use_fp16 else None
        if self.resume:
            self._load()
        self.net = (
            nn.parallel.DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            if self.dist.enabled
            else self.model
        )

    def _initial_model(self) -> nn.Module:
        """The recipe's model, with the weights (and deploy transforms, e.g. pruning) of ``init`` if given."""
        c = self.config
        if c.init is None:
            return create_model(c.model.name, scale=c.scale, **c.model.kwargs)
        model = load(c.init)
        spec = model.tinysr_spec
        if spec.name != c.model.name or spec.scale != c.scale or any(spec.kwargs.get(k) != v for k, v in c.model.kwargs.items()):
            raise TinySRError(f"init {c.init}: holds {spec.name} x{spec.scale} {spec.kwargs}, but the recipe trains "
                              f"{c.model.name} x{c.scale} {c.model.kwargs}")  # fmt: skip
        return model.train()

    def _autocast(self):
        amp = self.config.train.amp
        if amp is None or self.device.type != "cuda":
            return nullcontext()
        return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)

    # ------------------------------------------------------------------------------ checkpoints
    def _state(self) -> dict:
        state = {
            "iteration": self.iteration,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "callbacks": [cb.state_dict() for cb in self.callbacks],
            "best": dict(self.best),
            "torch_rng": torch.get_rng_state(),
            "config": self.config.to_dict(),
        }
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def _load(self) -> None:
        state = load_state(self.run_dir)
        shown = recipe_mismatch(state.get("config"), self.config)
        if shown:
            raise TinySRError(f"{self.run_dir}: the recipe differs from the one this run was started with ({shown}; see its config.yaml)")
        stale = stale_input(self.run_dir, self.config.to_dict())
        if stale:
            raise TinySRError(f"{self.run_dir}: {stale}, so it cannot be resumed; move the folder away to retrain it")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        for cb, cb_state in zip(self.callbacks, state["callbacks"]):
            cb.load_state_dict(cb_state)
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.best = dict(state["best"])
        self.iteration = int(state["iteration"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    def _save_checkpoint(self) -> None:
        if self.dist.is_main:
            save_state(self.run_dir, self._state())
        barrier(self.dist)

    # ---------------------------------------------------------------------------------- logging
    def _open_log(self):
        path = self.run_dir / "log.jsonl"
        if self.resume and path.is_file():
            # Drop entries written after the checkpoint we resume from (they will be written again)
            # and a last line cut short by a kill.
            iterations = [(ln, _log_iteration(ln)) for ln in path.read_text().splitlines()]
            kept = [ln for ln, it in iterations if it is not None and it <= self.iteration]
            atomic_write(path, lambda tmp: Path(tmp).write_text("".join(k + "\n" for k in kept)))
        self._log_file = open(path, "a", buffering=1)
        self._tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tb"))
        except ImportError:
            pass  # TensorBoard is optional

    def log(self, record: dict) -> None:
        if not self.dist.is_main:
            return
        self._log_file.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in record.items():
                if key != "iter" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(key, value, record["iter"])

    # ------------------------------------------------------------------------------- validation
    def eval_model(self) -> nn.Module:
        return self.ema.model if self.ema else self.model

    def exported_model(self) -> nn.Module:
        """The model as written to model files: ``eval_model`` passed through each callback's ``export``."""
        model = self.eval_model()
        for cb in self.callbacks:
            model = cb.export(model)
        return model

    def validate(self) -> dict[str, float] | None:
        scores = None
        if self.dist.is_main and self.val_data is not None:
            model = self.eval_model()
            was_training = model.training
            score = evaluate(model, self.val_data, progress=False)
            model.train(was_training)
            scores = {"val_psnr": score.psnr, "val_ssim": score.ssim}
            if score.psnr > self.best["psnr"]:
                self.best = {"psnr": score.psnr, "iteration": self.iteration}
                save(self.exported_model(), self.run_dir / "best.safetensors")
            self.log({"iter": self.iteration, **scores, "best_psnr": self.best["psnr"], "time": time.perf_counter() - self._start_time})
            for cb in self.callbacks:
                cb.on_validation(self, self.iteration, scores)
        barrier(self.dist)
        return scores

    # ------------------------------------------------------------------------------------- loop
    def _batches(self):
        c = self.config
        loader = DataLoader(
            self.train_data,
            batch_size=c.train.batch_size,
            sampler=SampleStream(self.iteration, c.train.iterations, c.train.batch_size, self.dist.rank, self.dist.world_size),
            num_workers=c.data.workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )
        return iter(loader)

    def train_step(self, lr_img: torch.Tensor, hr_img: torch.Tensor) -> dict[str, float]:
        c = self.config.train
        lr_value = lr_at(c, self.iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = lr_value
        for cb in self.callbacks:
            cb.on_step_start(self, self.iteration)
        with self._autocast():
            sr = self.net(lr_img)
        step = Step(self.iteration, lr_img, hr_img, sr.float(), trainer=self)
        parts = {name: weight * term(step) for name, weight, term in self.loss_terms}
        for cb in self.callbacks:  # regularisers a method adds (e.g. ASSL's sparsity penalties)
            extra = cb.loss(step)
            if extra is not None:
                parts[type(cb).__name__] = extra
        loss = sum(parts.values())
        finite = torch.isfinite(loss.detach())
        if self.dist.enabled:  # every rank must stop together
            flag = finite.float().to(self.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
            finite = flag.bool()
        if not bool(finite):
            raise NonFiniteLoss(
                f"loss became {loss.item()} at iteration {self.iteration + 1}: training stopped; "
                f"the last good checkpoint is kept in {state_path(self.run_dir)}"
            )
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if c.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.iteration += 1
        logs = {"loss": loss.item(), "lr": lr_value, **({k: v.item() for k, v in parts.items()} if len(parts) > 1 else {})}
        for cb in self.callbacks:
            cb.on_step_end(self, self.iteration, logs)
        return logs

    def run(self) -> Path:
        """Train to ``train.iterations``; returns the path of the final model file."""
        c = self.config
        try:
            self._build()
            if self.dist.is_main:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                recipe = c.to_dict()
                text = yaml.safe_dump(recipe, sort_keys=False)
                atomic_write(self.run_dir / "config.yaml", lambda tmp: Path(tmp).write_text(text))
                if not self.resume:
                    record_inputs(self.run_dir, recipe)
                self._open_log()
            barrier(self.dist)
            self.model.train()
            bar = tqdm(total=c.train.iterations, initial=self.iteration, disable=not (self.progress and self.dist.is_main), dynamic_ncols=True, desc="train")
            self._start_time = time.perf_counter()
            start_iter, samples = self.iteration, c.train.batch_size * self.dist.world_size
            for lr_img, hr_img in self._batches():
                logs = self.train_step(lr_img.to(self.device, non_blocking=True), hr_img.to(self.device, non_blocking=True))
                bar.update(1)
                it = self.iteration
                if it % c.train.log_every == 0 or it == c.train.iterations:
                    elapsed = time.perf_counter() - self._start_time
                    rate = (it - start_iter) / max(elapsed, 1e-9)
                    self.log({"iter": it, **logs, "it_s": rate, "img_s": rate * samples, "time": elapsed})
                    bar.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs['lr']:.2e}")
                if it % c.train.val_every == 0 or it == c.train.iterations:
                    scores = self.validate()
                    if scores:
                        bar.write(f"iter {it}: {self.val_data.name} PSNR {scores['val_psnr']:.3f} SSIM {scores['val_ssim']:.4f}")
                if it % c.train.checkpoint_every == 0 or it == c.train.iterations:
                    self._save_checkpoint()
            bar.close()
            in_sync = weights_in_sync(self.dist, self.model, self.device)
            final = self.run_dir / "model.safetensors"
            if self.dist.is_main:
                save(self.exported_model(), final)
                self.log({"iter": self.iteration, "done": True, "ranks_in_sync": in_sync, "world_size": self.dist.world_size})
            for cb in self.callbacks:
                cb.on_train_end(self)
            barrier(self.dist)
            return final
        finally:
            if getattr(self, "_log_file", None):
                self._log_file.close()
            if getattr(self, "_tb", None):
                self._tb.close()
            cleanup(self.dist)


def train(config: Config, run_dir: str | Path, device: str | None = None, resume: bool = False, progress: bool = True) -> Path:
    """Train ``config`` into ``run_dir`` (see :class:`Trainer`); returns the final model file."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and int(os.environ.get("WORLD_SIZE", "1")) > 1 and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["WORLD_SIZE"])))
    return Trainer(config, run_dir, device=device, resume=resume, progress=progress).run()


class _Absent:
    """A key missing from one recipe: its own object, so no recipe value can be mistaken for it."""

    def __repr__(self) -> str:
        return "<absent>"


_ABSENT = _Absent()


def _same_value(saved, wanted) -> bool:
    """Equal; or absent on one side and None on the other (a recipe field added later, left unset);
    or two paths naming the same existing file (a run reached through a link)."""
    if saved == wanted or (saved is None and wanted is _ABSENT) or (saved is _ABSENT and wanted is None):
        return True
    if isinstance(saved, str) and isinstance(wanted, str) and Path(saved).is_file() and Path(wanted).is_file():
        return Path(saved).samefile(wanted)
    return False


def recipe_differences(saved, wanted, where: str = "") -> list[str]:
    """The dotted keys at which two resolved recipes (``Config.to_dict()`` trees) differ."""
    if isinstance(saved, dict) and isinstance(wanted, dict):
        return [d for k in sorted(set(saved) | set(wanted), key=str)
                for d in recipe_differences(saved.get(k, _ABSENT), wanted.get(k, _ABSENT), f"{where}.{k}" if where else str(k))]  # fmt: skip
    if isinstance(saved, list) and isinstance(wanted, list) and len(saved) == len(wanted):
        return [d for i, (s, w) in enumerate(zip(saved, wanted)) for d in recipe_differences(s, w, f"{where}[{i}]")]
    return [] if _same_value(saved, wanted) else [f"{where or 'recipe'}: {saved!r} there, {wanted!r} here"]


def recipe_mismatch(saved: dict | None, config: Config) -> str:
    """The first differences between a run's saved recipe and ``config``, for an error line ("" if none).

    The one test of "same recipe", used both to resume a run and to reuse a finished one.
    """
    differences = recipe_differences(saved, config.to_dict())
    return "; ".join(differences[:3]) + (f"; and {len(differences) - 3} more" if len(differences) > 3 else "")


def _changed_model_option(final: Path, config: Config) -> str:
    """The first option of the recipe's model whose value in the finished model file differs from
    what the recipe builds now (a builder default changed in the code), for an error line; "" if
    none. Options the file does not record (files written before specs held defaults) are not
    compared; nor is a model the run started from a file (``init``) or exported under another name."""
    metadata = read_metadata(final)
    if config.init is not None or metadata["name"] != config.model.name:
        return ""
    saved = json.loads(metadata["kwargs"])
    now = json.loads(json.dumps(resolved_options(config.model.name, config.scale, **config.model.kwargs)))  # as a file holds them
    for key in sorted(saved):
        if key not in now or saved[key] != now[key]:
            return f"model option {key}: {saved[key]!r} there, {now.get(key, _ABSENT)!r} here"
    return ""


def train_or_reuse(config: Config, run_dir: str | Path, device: str | None = None, progress: bool = True) -> Path:
    """The final model of ``config`` in ``run_dir``: reused when finished, else trained (resumed if started).

    A finished run is reused only if it is what the recipe would train now: its ``config.yaml`` is
    this recipe, its model was built with the options the recipe's model gets now (a builder's
    default may have changed in the code), and every file the recipe names (a teacher, a model to
    start from) holds the bytes the run read (``inputs.json``; runs older than that file: was not
    written after the run's model). Anything else is an error naming what differs, never reported
    as this recipe's result.
    """
    run_dir = Path(run_dir)
    final = run_dir / "model.safetensors"
    if not final.is_file():
        return train(config, run_dir, device=device, resume=state_path(run_dir).is_file(), progress=progress)
    saved_file = run_dir / "config.yaml"
    if not saved_file.is_file():
        raise TinySRError(f"{run_dir}: a finished run without config.yaml, so its recipe is unknown; move the folder away to retrain it")
    shown = recipe_mismatch(yaml.safe_load(saved_file.read_text()), config)
    if shown:
        raise TinySRError(f"{run_dir}: finished with a different recipe ({shown}); move the folder away to retrain it")
    shown = _changed_model_option(final, config)
    if shown:
        raise TinySRError(f"{run_dir}: finished with a model the recipe no longer builds ({shown}: a default changed in the code?); move the folder away to retrain it")
    stale = stale_input(run_dir, config.to_dict(), finished=final)
    if stale:
        raise TinySRError(f"{run_dir}: {stale}; move the folder away to retrain it")
    return final
