"""The training engine: iteration-based, resumable, optionally distributed; methods plug in by name.

One step reads top to bottom: set the learning rate, forward, loss terms, backward, clip, step,
EMA, callbacks, log, validate, checkpoint. The engine knows no method: everything a method needs
comes from the loss terms and callbacks named in the recipe (DESIGN.md principle 2).

Resume is exact by construction: the learning rate is a function of the iteration
(:mod:`.schedule`), every training sample is a function of ``(seed, sample number)``
(:class:`tinysr.data.TrainPatches`), and the checkpoint holds model, optimizer, EMA, callback
states and RNG states. A run of N iterations and a run stopped (even by ``kill -9``) and resumed
end with identical weights on CPU.

The run folder's files and the rules for resuming and reusing a run are in :mod:`.run_dir`;
callbacks and loss terms see the trainer through :class:`tinysr.plugins.TrainerView`.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..compress.pack import TRANSFORM as PACK
from ..compress.pack import unpack_into
from ..data import BenchmarkSet, LRCache, TrainPatches
from ..errors import TinySRError
from ..evaluate import evaluate
from ..files import folder_lock
from ..model_file import load, save
from ..models import create_model
from ..plugins import Step, build_callback, build_loss
from ..progress import progress
from .checkpoint import load_state, save_state, state_path
from .config import Config
from .distributed import DistInfo, barrier, cleanup, init_distributed, weights_in_sync
from .ema import EMA
from .run_dir import (
    BEST_NAME,
    FINAL_NAME,
    LOG_NAME,
    check_resumable,
    finished_model,
    has_checkpoint,
    record_inputs,
    truncate_log,
    write_recipe,
)
from .sampling import SampleStream
from .schedule import lr_at


class NonFiniteLoss(TinySRError):
    pass


@contextmanager
def stop_requests():
    """While inside: the first SIGINT or SIGTERM only asks the loop to stop (``flag[0]`` set), so it
    stops between iterations with a checkpoint written; a second one interrupts at once."""
    flag = [False]
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def ask(signum, frame):
        if flag[0]:
            raise KeyboardInterrupt
        flag[0] = True

    previous = {sig: signal.signal(sig, ask) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def start_from(model: nn.Module, path: str | Path) -> tuple[int, int]:
    """Copy into ``model`` every tensor of the model file ``path`` with the same name and shape
    (``model.init_from``); returns (copied, tensors in ``model``). The file must hold the same
    architecture in its training form or packed (``compress.pack.unpack_into``: the same function,
    each latent weight its signs times scale): another model, a merged or pruned form or a file
    with no tensor in common is an error naming it."""
    source = load(path)
    spec, target = source.tinysr_spec, model.tinysr_spec
    if spec.name != target.name:
        raise TinySRError(f"model.init_from {path}: holds {spec.name}, but the recipe trains {target.name}")
    forms = [t["name"] for t in spec.transforms]
    ours = model.state_dict()
    if forms == [PACK]:  # unpacked: each latent weight is its packed signs times scale
        try:
            copied = unpack_into(model, source)
        except ValueError as e:
            raise TinySRError(f"model.init_from {path}: cannot unpack it: {e}") from None
    elif forms:
        raise TinySRError(f"model.init_from {path}: a deployable form ({', '.join(forms)}); give the model file as trained or packed")
    else:
        matching = {k: v for k, v in source.state_dict().items() if k in ours and ours[k].shape == v.shape}
        model.load_state_dict(matching, strict=False)
        copied = len(matching)
    if not copied:
        raise TinySRError(f"model.init_from {path}: no tensor has the name and shape of one of {target.name}'s")
    return copied, len(ours)


def autocast_dtype(amp: str | None, device: torch.device) -> torch.dtype | None:
    """The dtype ``train.amp`` runs the forward pass in on ``device``, or None for float32.

    CUDA takes bf16 and fp16 (with gradient scaling). A CPU takes bf16 only where its convolutions
    run natively in it (oneDNN on AVX512-BF16 or AMX): an AVX2-only CPU would emulate bf16, slower
    than float32, so there the option falls back to float32, as does fp16, which CPUs do not
    accelerate. The weights, the optimizer and the loss stay float32."""
    if amp is None:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if amp == "bf16" else torch.float16
    if device.type == "cpu" and amp == "bf16" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 convolutions natively on this CPU (AVX512-BF16 or AMX)."""
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


class Trainer:
    """Trains ``config`` into ``run_dir``; callbacks and loss terms see it as a
    :class:`tinysr.plugins.TrainerView` (``model``, ``device``, ``run_dir``, ``resume``, ``is_main``,
    ``total_iterations``, ``training_lr_images``, ``eval_model``, ``load_model``, ``save_model``)."""

    def __init__(self, config: Config, run_dir: str | Path, device: str = "cpu", resume: bool = False, progress: bool = True):
        self.config, self.run_dir, self.resume, self.progress = config, Path(run_dir), resume, progress
        self.dist: DistInfo = init_distributed(device)
        self.device = torch.device(f"cuda:{self.dist.local_rank}" if device.startswith("cuda") and self.dist.enabled else device)
        self.iteration = 0
        self.best = {"psnr": -math.inf, "iteration": -1}
        self._seconds_before = 0.0  # training time of the processes this run resumes from

    # ------------------------------------------------------------------ what callbacks may read
    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    @property
    def total_iterations(self) -> int:
        return self.config.train.iterations

    def training_lr_images(self) -> Sequence[Any]:
        return self.train_data.lr_images

    def load_model(self, path: str | Path) -> nn.Module:
        return load(path, device=self.device).eval()

    def save_model(self, model: nn.Module, path: str | Path) -> None:
        save(model, path)

    # ----------------------------------------------------------------------------------- set-up
    def _check_run_dir(self) -> None:
        has_state = has_checkpoint(self.run_dir)
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
        if self.val_data is not None and self.dist.is_main:
            self.val_data.check()  # a damaged validation image is an error now, not val_every iterations in
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
        self.autocast_dtype = autocast_dtype(c.train.amp, self.device)
        if c.train.amp is not None and self.autocast_dtype is None:
            say(
                f"tinysr: warning: train.amp {c.train.amp}: not accelerated on this {self.device.type} (bf16 needs "
                "CUDA or a CPU with native bf16 convolutions, fp16 CUDA); training in float32"
            )
        use_fp16 = self.autocast_dtype == torch.float16
        self.scaler = torch.amp.GradScaler("cuda") if use_fp16 else None
        if self.resume:
            self._load()
        self.net = (
            nn.parallel.DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            if self.dist.enabled
            else self.model
        )

    def _initial_model(self) -> nn.Module:
        """The recipe's model, with the weights (and deploy transforms, e.g. pruning) of ``init`` if
        given, or started from the matching tensors of ``model.init_from``."""
        c = self.config
        if c.init is None:
            model = create_model(c.model.name, scale=c.scale, **c.model.kwargs)
            if c.model.init_from is not None and not self.resume:  # a resume loads every weight from its checkpoint
                copied, total = start_from(model, c.model.init_from)
                if self.is_main:
                    print(
                        f"model.init_from {c.model.init_from}: {copied} of {total} tensors copied, the rest initialised as usual",
                        file=sys.stderr,
                    )
            return model
        model = load(c.init)
        spec = model.tinysr_spec
        if spec.name != c.model.name or spec.scale != c.scale or any(spec.kwargs.get(k) != v for k, v in c.model.kwargs.items()):
            raise TinySRError(
                f"init {c.init}: holds {spec.name} x{spec.scale} {spec.kwargs}, but the recipe trains "
                f"{c.model.name} x{c.scale} {c.model.kwargs}"
            )
        return model.train()

    def _autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    # ------------------------------------------------------------------------------ checkpoints
    def _state(self) -> dict:
        state = {
            "iteration": self.iteration,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "callbacks": [cb.state_dict() for cb in self.callbacks],
            "best": dict(self.best),
            "training_seconds": self.training_seconds(),
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
        check_resumable(self.run_dir, state.get("config"), self.config)
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
        self._seconds_before = float(state.get("training_seconds", 0.0))
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    def training_seconds(self) -> float:
        """Wall seconds this run has trained, over every process that trained it: a resumed run
        carries the time up to its checkpoint, and the time between the two processes is left out."""
        return self._seconds_before + time.perf_counter() - self._start_time

    def _save_checkpoint(self) -> None:
        if self.dist.is_main:
            save_state(self.run_dir, self._state())
        barrier(self.dist)

    # ---------------------------------------------------------------------------------- logging
    def _open_log(self):
        path = self.run_dir / LOG_NAME
        if self.resume:
            truncate_log(path, self.iteration)
        # a fresh run starts its own log (a folder left by a run stopped before its first checkpoint may hold one)
        self._log_file = open(path, "a" if self.resume else "w", buffering=1)
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
                save(self.exported_model(), self.run_dir / BEST_NAME)
            self.log({"iter": self.iteration, **scores, "best_psnr": self.best["psnr"], "time": self.training_seconds()})
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

    def train_step(self, lr_image: torch.Tensor, hr_image: torch.Tensor) -> dict[str, float]:
        c = self.config.train
        lr_value = lr_at(c, self.iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = lr_value
        for cb in self.callbacks:
            cb.on_step_start(self, self.iteration)
        with self._autocast():
            sr = self.net(lr_image)
        step = Step(self.iteration, lr_image, hr_image, sr.float(), trainer=self)
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

    def _loop(self, bar, stop: list[bool]) -> None:
        """The iterations from ``self.iteration`` to the recipe's end: step, log, validate, checkpoint.

        A stop request (``stop[0]``, set by SIGINT or SIGTERM) ends the loop after the iteration in
        progress, with a checkpoint of it, and raises ``KeyboardInterrupt``.
        """
        c = self.config
        start_iter, samples = self.iteration, c.train.batch_size * self.dist.world_size
        for lr_image, hr_image in self._batches():
            logs = self.train_step(lr_image.to(self.device, non_blocking=True), hr_image.to(self.device, non_blocking=True))
            bar.update(1)
            it = self.iteration
            if it % c.train.log_every == 0 or it == c.train.iterations:
                rate = (it - start_iter) / max(time.perf_counter() - self._start_time, 1e-9)  # this process's own
                self.log({"iter": it, **logs, "it_s": rate, "img_s": rate * samples, "time": self.training_seconds()})
                bar.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs['lr']:.2e}")
            if it % c.train.val_every == 0 or it == c.train.iterations:
                scores = self.validate()
                if scores:
                    bar.write(f"iter {it}: {self.val_data.name} PSNR {scores['val_psnr']:.3f} SSIM {scores['val_ssim']:.4f}")
            if it % c.train.checkpoint_every == 0 or it == c.train.iterations:
                self._save_checkpoint()
            if it < c.train.iterations and self._stop_requested(stop):
                if it % c.train.checkpoint_every != 0 and it != c.train.iterations:
                    self._save_checkpoint()
                if self.dist.is_main:
                    print(
                        f"tinysr: stopped at iteration {it}; checkpoint {state_path(self.run_dir)} saved (--resume continues)",
                        file=sys.stderr,
                    )
                raise KeyboardInterrupt

    def _stop_requested(self, stop: list[bool]) -> bool:
        if not self.dist.enabled:
            return stop[0]
        flag = torch.tensor([float(stop[0])], device=self.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)  # every rank stops at the same iteration
        return bool(flag.item())

    def run(self) -> Path:
        """Train to ``train.iterations``; returns the path of the final model file.

        The run folder is locked for the run (rank 0 holds the lock), so a second process aimed at
        it stops with an error instead of mixing its recipe, weights and log with this one's.
        """
        with folder_lock(self.run_dir) if self.dist.is_main else nullcontext():
            self._check_run_dir()  # every rank, and under the lock: what the folder holds cannot change while we look
            return self._run()

    def _run(self) -> Path:
        c = self.config
        try:
            self._build()
            if self.dist.is_main:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                recipe = c.to_dict()
                write_recipe(self.run_dir, recipe)
                if not self.resume:
                    record_inputs(self.run_dir, recipe)
                self._open_log()
            barrier(self.dist)
            self.model.train()
            bar = progress(
                total=c.train.iterations, initial=self.iteration, disable=not (self.progress and self.dist.is_main), desc="train"
            )
            self._start_time = time.perf_counter()
            with stop_requests() as stop:
                self._loop(bar, stop)
            bar.close()
            in_sync = weights_in_sync(self.dist, self.model, self.device)

            final = self.run_dir / FINAL_NAME
            # The callbacks' outputs (ASSL's pruned model) first, the final model last: its atomic
            # write is the one step that marks the run finished, so a run stopped in between is
            # resumed (from its last checkpoint) and writes both again, never left half-finished.
            for cb in self.callbacks:
                cb.on_train_end(self)
            if self.dist.is_main:
                save(self.exported_model(), final)
                self.log({"iter": self.iteration, "done": True, "ranks_in_sync": in_sync, "world_size": self.dist.world_size})
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


def train_or_reuse(config: Config, run_dir: str | Path, device: str | None = None, progress: bool = True) -> Path:
    """The final model of ``config`` in ``run_dir``: reused when finished (if it is this recipe's,
    :func:`.run_dir.finished_model`; else an error naming what differs), else trained (resumed if
    started)."""
    final = finished_model(config, run_dir)
    if final is not None:
        return final
    return train(config, run_dir, device=device, resume=has_checkpoint(run_dir), progress=progress)
