"""The training loop: AMP, channels_last, gradient accumulation and clipping, validation with the competition
score, checkpoints (last, best), exact resume, early stopping, per-epoch metrics. Runs the same under torchrun."""
from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm import tqdm

from data.dataset import ImageDataset, TrainDataset, unpack_mask_bits
from data.pipeline import FoldData, prepare_fold
from losses.factory import build_loss
from models.factory import build_model
from schedulers.factory import Schedule
from tasks.registry import build_task
from trainer.averaging import WeightAverager
from trainer.callbacks import Callback, CallbackList, StopTraining
from trainer.checkpoint import (
    check_finite,
    first_nonfinite,
    inference_state,
    load_checkpoint,
    save_checkpoint,
    saved_epoch,
    unwrap,
)
from trainer.optim import build_optimizer, check_optimizer
from trainer.predictor import Predictor, model_input
from trainer.rundir import truncate_metrics
from trainer.runtime import Runtime, seed_everything
from transforms.copy_paste import build_copy_paste
from transforms.cpu import build_cpu_transforms
from transforms.gpu import build_gpu_transforms
from utils.config import Config, save_config, to_dict
from utils.errors import UserError
from utils.files import write_error
from utils.logger import RunLogger


def _split_name(d) -> str:
    """Which split the run trains and validates on, for messages: data.split=files has no folds."""
    return f"fold {d.fold}/{d.n_splits}" if d.split == "kfold" else "data.split=files"


class Trainer:
    def __init__(self, cfg: Config, run_dir: str | Path, runtime: Runtime, resume: str | None = None,
                 progress: bool = True, callbacks: Iterable[Callback] = ()):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.runtime = runtime
        self.progress = progress and runtime.is_main
        self.task = build_task(cfg)  # layout, mode and submission, checked before any data work
        self.classes = list(cfg.task.classes)
        self.mode = self.task.mode  # activation, loss mode, metric: the trainer never tests the mode
        seed_everything(cfg.trainer.seed)
        check_optimizer(cfg.optimizer)  # a wrong optimizer keyword fails before the data is cached
        model = build_model(cfg.model, len(self.classes)).to(runtime.device)  # a misfit fails before the data work
        if cfg.trainer.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model

        self.data: FoldData = prepare_fold(cfg, self.task.layout, runtime, self.progress)
        self.train_loader = self._train_loader()
        self.val_loader = self._val_loader()
        self.gpu_augment = build_gpu_transforms(cfg.transforms.gpu, "transforms.gpu")

        self.optimizer = build_optimizer(cfg.optimizer, model)
        steps_per_epoch = math.ceil(len(self.train_loader) / cfg.trainer.accumulate)
        self.schedule = Schedule(self.optimizer, cfg.scheduler, steps_per_epoch, cfg.trainer.epochs)
        self.scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.amp_dtype is torch.float16)
        self.loss_fn = build_loss(cfg.loss, self.mode.loss_mode, self.task.ignore_index)  # void left out
        self.averager = None if cfg.averaging.mode == "off" else WeightAverager(cfg.averaging, model, self.optimizer,
                                                                                cfg.trainer.epochs)

        self.start_epoch, self.best_score, self.stale_validations, self.best_record = 0, -1.0, 0, None
        self.last_extra: dict = {}  # the mode's further validation numbers (multiclass: pixel accuracy)
        self.nonfinite_run, self.nonfinite_epoch, self._window_finite = 0, 0, True  # NaN/inf guard (train_step)
        self._position = (0, 0)  # (epoch, batch) of the current step, for error messages
        if resume:
            self._resume(resume)
        if runtime.distributed:
            self.model = DistributedDataParallel(
                model, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None,
                find_unused_parameters=cfg.trainer.ddp_find_unused_parameters)
        self.train_model = torch.compile(self.model) if cfg.trainer.compile else self.model
        self.predictor = Predictor(unwrap(self.model), cfg.predict, runtime, cfg.data.mean, cfg.data.std,
                                   cfg.trainer.channels_last, window=cfg.data.crop_size,
                                   activation=self.mode.activation)
        if runtime.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / "config.yaml")
        self.logger = RunLogger(self.run_dir, enabled=runtime.is_main)
        self.callbacks = CallbackList(callbacks)  # tracking backends come from the caller (tracking.build_tracking)

    # ------------------------------------------------------------------------------------------- data

    def _train_loader(self) -> DataLoader:
        d, rt = self.cfg.data, self.runtime
        copy_paste = build_copy_paste(self.cfg.transforms.copy_paste, self.classes, self.data.cache,
                                      self.data.train_indices)
        dataset = TrainDataset(self.data.cache, self.data.train_indices,
                               build_cpu_transforms(self.cfg.transforms.train, "transforms.train"), d.crop_size,
                               copy_paste)
        if len(dataset) < d.batch_size * rt.world_size:
            raise UserError(f"data.batch_size: {d.batch_size} x {rt.world_size} process(es) is more than the "
                            f"{len(dataset)} training images ({_split_name(d)})")
        if rt.distributed:
            sampler = DistributedSampler(dataset, num_replicas=rt.world_size, rank=rt.rank, shuffle=True,
                                         seed=self.cfg.trainer.seed, drop_last=True)
        else:
            self._sampler_generator = torch.Generator()
            sampler = RandomSampler(dataset, generator=self._sampler_generator)
        return DataLoader(dataset, batch_size=d.batch_size, sampler=sampler, drop_last=True, **self._loader_kwargs())

    def _val_loader(self) -> DataLoader:
        rt = self.runtime
        indices = self.data.val_indices[rt.rank::rt.world_size]  # each rank scores its share; sums are reduced
        transform = build_cpu_transforms(self.cfg.transforms.val, "transforms.val")
        dataset = ImageDataset(self.data.cache, indices, transform)
        return DataLoader(dataset, batch_size=self.cfg.data.val_batch_size, shuffle=False, **self._loader_kwargs())

    def _loader_kwargs(self) -> dict:
        d = self.cfg.data
        kwargs = dict(num_workers=d.num_workers, pin_memory=d.pin_memory and self.runtime.device.type == "cuda")
        if d.num_workers > 0:
            kwargs.update(persistent_workers=d.persistent_workers, prefetch_factor=d.prefetch_factor)
        return kwargs

    def _to_device(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.runtime.device
        images = batch["image"].to(device, non_blocking=True)
        if "mask_bits" in batch:
            masks = unpack_mask_bits(batch["mask_bits"].to(device, non_blocking=True), images.shape[-1])
        elif "labels" in batch:  # a label map rides the GPU augmentations as one plane (nearest resampling)
            masks = batch["labels"].to(device, non_blocking=True)[:, None]
        else:
            masks = batch["mask"].to(device, non_blocking=True)
        x, masks = model_input(images, self.cfg.data.mean, self.cfg.data.std, self.gpu_augment, masks.float())
        if "labels" in batch:
            masks = masks[:, 0].round().long()  # class indices, as smp's multiclass losses take them
        if self.cfg.trainer.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, masks

    # ------------------------------------------------------------------------------------------- loop

    def fit(self) -> dict:
        """Train to the end (or an early stop, or a callback's StopTraining); callbacks see every step of it."""
        cfg = self.cfg
        if self.runtime.is_main:
            print(f"training {cfg.model.arch}/{cfg.model.encoder} on {len(self.data.train_indices)} images, "
                  f"validating on {len(self.data.val_indices)} ({_split_name(cfg.data)}), "
                  f"{self.runtime.device}, {self.runtime.world_size} process(es), run dir {self.run_dir}")
            if self.data.meta:
                print(f"metadata (age, sex, weight, height) for {len(self.data.meta)} persons in {cfg.data.root}")
        try:
            self._emit("on_start")
            result = self._fit_epochs()
        except KeyboardInterrupt as e:
            self._emit("on_crash", e)
            raise KeyboardInterrupt(self._interrupted()) from None
        except BaseException as e:
            self._emit("on_crash", e)
            raise
        if not cfg.trainer.keep_last and self.runtime.is_main:  # kept while training, for a resume after a crash
            (self.run_dir / "last.pt").unlink(missing_ok=True)
        self._emit("on_end", result)
        return result

    def _interrupted(self) -> str:
        """What a Ctrl-C leaves behind and how to go on from it."""
        last = self.run_dir / "last.pt"
        epoch = saved_epoch(last)
        if epoch is None:
            return f"no checkpoint yet in {self.run_dir} (the first epoch had not ended)"
        return f"{last} kept (epoch {epoch}); continue with: python train.py --resume {last}"

    def _fit_epochs(self) -> dict:
        t = self.cfg.trainer
        epoch = self.start_epoch - 1  # the last epoch run (0-based), also when none is left to run
        stopped_early, stopped_by = False, None
        for epoch in range(self.start_epoch, t.epochs):
            started = time.time()
            train_loss = self._train_epoch(epoch)
            self._check_weights_finite(epoch)
            score, per_class = None, None
            if (epoch + 1) % t.val_every == 0 or epoch + 1 == t.epochs:
                score, per_class = self.validate(self._ema_model())
            if self.averager is not None and self.averager.in_swa(epoch):
                self.averager.after_epoch(unwrap(self.model), epoch)  # SWALR replaces the schedule from here on
            else:
                self.schedule.after_epoch(score)
            improved = score is not None and score > self.best_score
            if improved:
                self.best_score, self.stale_validations = score, 0
            elif score is not None:
                self.stale_validations += 1
            m = self.mode.metric  # "dice" (multilabel) or "miou" (multiclass): the record keys follow it
            record = {"epoch": epoch + 1, "train_loss": train_loss, "lr": self.optimizer.param_groups[0]["lr"],
                      f"val_{m}": score, f"best_{m}": self.best_score if self.best_score >= 0 else None,
                      "seconds": round(time.time() - started, 2)}
            if per_class is not None:
                record[f"val_{m}_per_class"] = dict(zip(self.classes, per_class))
                record.update({f"val_{k}": v for k, v in self.last_extra.items()})
            if self.nonfinite_epoch:
                record["nonfinite_steps"] = self.nonfinite_epoch
            if improved:
                self.best_record = record
            if self.runtime.is_main:  # checkpoints first: metrics.jsonl is never ahead of last.pt
                state = self._state(epoch, record)
                if improved:
                    save_checkpoint(inference_state(state), self.run_dir / "best.pt")
                save_checkpoint(state, self.run_dir / "last.pt")
            self._log(record)
            if self.runtime.is_main:
                self._report(record, per_class)
            stopped_by = self._epoch_callbacks(record, improved)
            if stopped_by is not None:
                if self.runtime.is_main:
                    print(f"stopped after epoch {epoch + 1}: {stopped_by}")
                break
            if t.early_stop_patience is not None and self.stale_validations >= t.early_stop_patience:
                stopped_early = True
                if self.runtime.is_main:
                    print(f"early stop: no improvement in {self.stale_validations} validations")
                break
        if self.averager is not None and self.averager.mode == "swa" and self.averager.count and stopped_by is None:
            self._finish_swa(epoch)
        return {f"best_{self.mode.metric}": self.best_score, "best_score": self.best_score,
                "metric": self.mode.metric, "metric_title": self.mode.metric_title,
                "best_record": self.best_record, "epochs": epoch + 1,
                "stopped_early": stopped_early, "stopped_by": stopped_by}

    def _log(self, record: dict) -> None:
        """metrics.jsonl after the checkpoints; a full disk is one line naming the file."""
        try:
            self.logger.log(record)
        except OSError as e:
            raise write_error(self.logger.path, e) from None

    def _emit(self, event: str, *args) -> None:
        if self.runtime.is_main:
            self.callbacks.emit(event, self, *args)

    def _epoch_callbacks(self, record: dict, improved: bool) -> str | None:
        """Run the epoch's callbacks on rank 0; a StopTraining there stops every rank (the reason, or None)."""
        reason = None
        try:
            self._emit("on_epoch_end", record)
            if improved:
                self._emit("on_best", record)
        except StopTraining as e:
            reason = str(e) or "stopped by a callback"
        if self.runtime.distributed:
            flag = torch.tensor(float(reason is not None), device=self.runtime.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            if flag.item() and reason is None:
                reason = "stopped by a callback on rank 0"
        return reason

    def _ema_model(self):
        """The model to validate: the EMA weights when kept (best.pt is chosen by them), else the raw ones."""
        return self.averager.module if self.averager is not None and self.averager.mode == "ema" else None

    def _finish_swa(self, epoch: int) -> None:
        """BatchNorm pass and validation of the SWA weights; they become best.pt when they score higher."""
        self.averager.update_batchnorm(self._to_device(batch)[0] for batch in self.train_loader)
        score, per_class = self.validate(self.averager.module)
        m = self.mode.metric
        record = {"epoch": epoch + 1, "swa": True, "swa_models": self.averager.count, f"val_{m}": score,
                  f"val_{m}_per_class": dict(zip(self.classes, per_class))}
        if self.runtime.is_main:  # checkpoints first: metrics.jsonl is never ahead of last.pt
            state = self._state(epoch, record)
            save_checkpoint(state, self.run_dir / "last.pt")
            if score > self.best_score:
                save_checkpoint(inference_state(state), self.run_dir / "best.pt")
        self._log(record)
        if self.runtime.is_main:
            print(f"SWA of {self.averager.count} epochs: val {self.mode.metric_title} {score:.4f} "
                  f"(best single {self.best_score:.4f})")
            print(self.mode.format_table(self.classes, per_class), flush=True)
        if score > self.best_score:
            self.best_score, self.best_record = score, record

    def _train_epoch(self, epoch: int) -> float:
        t = self.cfg.trainer
        seed_everything(t.seed + epoch)  # with the per-epoch sampler seed, a resumed run replays the same batches
        if self.runtime.distributed:
            self.train_loader.sampler.set_epoch(epoch)
        else:
            self._sampler_generator.manual_seed(t.seed + epoch)
        self.model.train()
        self.nonfinite_epoch = 0
        total, count = torch.zeros((), device=self.runtime.device), 0
        bar = tqdm(self.train_loader, desc=f"epoch {epoch + 1}/{t.epochs}", disable=not self.progress,
                   dynamic_ncols=True, leave=False)
        n_batches = len(self.train_loader)
        for i, batch in enumerate(bar):
            self._position = (epoch, i)
            loss = self.train_step(batch, step_now=(i + 1) % t.accumulate == 0 or i + 1 == n_batches)
            if torch.isfinite(loss):  # skipped steps do not count towards the epoch's loss
                total += loss
                count += 1
            if self.progress and (i % 10 == 0 or i + 1 == n_batches):
                bar.set_postfix(loss=f"{total.item() / max(count, 1):.4f}",
                                lr=f"{self.optimizer.param_groups[0]['lr']:.2e}")
        if self.runtime.distributed:
            torch.distributed.all_reduce(total)
            total /= self.runtime.world_size
        return float(total.item() / max(count, 1))

    def train_step(self, batch: dict, step_now: bool = True) -> torch.Tensor:
        """Forward and backward of one batch; an optimizer step when `step_now` (gradient accumulation)."""
        t = self.cfg.trainer
        x, y = self._to_device(batch)
        sync = self.model.no_sync() if self.runtime.distributed and not step_now else contextlib.nullcontext()
        with sync:
            with self.runtime.autocast():
                logits = self.train_model(x)
            loss = self.loss_fn(logits, y)  # in float32; a tuple (main, aux...) from an auxiliary head
            self.scaler.scale(loss / t.accumulate).backward()
        # one host sync per batch to see a NaN/inf loss (as the fp16 GradScaler does for its gradients)
        self._window_finite = self._window_finite and bool(torch.isfinite(loss.detach()))
        if step_now:
            finite = self._all_ranks_finite(self._window_finite)
            self._window_finite = True
            if t.grad_clip is not None and finite:
                self.scaler.unscale_(self.optimizer)
                norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
                finite = self._all_ranks_finite(bool(torch.isfinite(norm)) or self.scaler.is_enabled())
            if finite:
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.nonfinite_run = 0
            else:
                self._skip_step()
            self.optimizer.zero_grad(set_to_none=True)
            self.schedule.after_step()  # the schedule keeps its length, as with the fp16 scaler's skipped steps
            if self.averager is not None and finite:
                self.averager.after_step(unwrap(self.model))
        return loss.detach()

    def _all_ranks_finite(self, finite: bool) -> bool:
        """Every rank skips the same steps: one non-finite rank makes the step non-finite for all."""
        if not self.runtime.distributed:
            return finite
        flag = torch.tensor(float(finite), device=self.runtime.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
        return bool(flag.item())

    def _skip_step(self) -> None:
        """A NaN/inf loss or gradient: no optimizer step; a run of `trainer.max_nonfinite_steps` stops training."""
        self.nonfinite_run += 1
        self.nonfinite_epoch += 1
        if self.nonfinite_run >= self.cfg.trainer.max_nonfinite_steps:
            epoch, batch = self._position
            raise UserError(self._divergence(f"epoch {epoch + 1}, step {batch + 1}: {self.nonfinite_run} consecutive "
                                             f"optimizer steps with a NaN/inf loss or gradient were skipped",
                                             "; set trainer.max_nonfinite_steps to tolerate more"))

    def _check_weights_finite(self, epoch: int) -> None:
        """Weights or BatchNorm statistics gone NaN/inf cannot recover: stop before validating or saving them."""
        name = first_nonfinite(unwrap(self.model).state_dict())
        if name is None and self.averager is not None:
            name = first_nonfinite(self.averager.module.state_dict())
        if name is not None:
            raise UserError(self._divergence(f"epoch {epoch + 1}: weight {name!r} holds NaN or inf"))

    def _divergence(self, what: str, hint: str = "") -> str:
        c = self.cfg
        kept = "the last good checkpoints are kept" if (self.run_dir / "last.pt").is_file() else "no checkpoint saved"
        return (f"{what}; training stopped, {kept} in {self.run_dir}. Likely cause: a learning rate too high "
                f"(optimizer.lr={c.optimizer.lr:g}), input normalization (data.mean={c.data.mean:g}, "
                f"data.std={c.data.std:g}), loss parameters or fp16 overflow (trainer.amp={c.trainer.amp}){hint}")

    @torch.no_grad()
    def validate(self, model: torch.nn.Module | None = None) -> tuple[float, list[float]]:
        """Competition score of the validation fold, at the original resolution, by the shared Predictor
        (of the training model, or of `model`, e.g. averaged weights)."""
        self.model.eval()
        self.predictor.model = (model or unwrap(self.model)).eval()
        if self.runtime.distributed:  # BatchNorm statistics drift per rank after the last step: all score rank 0's
            for buffer in self.predictor.model.buffers():  # (the model best.pt holds), as DDP's next forward would
                torch.distributed.broadcast(buffer, 0)
        score = self.mode.new_score(len(self.classes), self.runtime.device)  # Dice or mIoU, by the task mode
        threshold = self.cfg.trainer.threshold
        for batch in tqdm(self.val_loader, desc="validate", disable=not self.progress, leave=False):
            probs = self.predictor(batch["image"])
            for p, index in zip(probs, batch["index"].tolist()):
                score.add(p, self.data.truth, self.data.truth_index[index], threshold)
        self.model.train()
        value, per_class, self.last_extra = score.compute()
        return value, per_class

    # ------------------------------------------------------------------------------------------- state

    def _state(self, epoch: int, record: dict) -> dict:
        """Everything to resume; `averaged` holds the EMA/SWA weights that inference prefers when present."""
        averaged = {} if self.averager is None else {"averaged": self.averager.module.state_dict(),
                                                     "averager": self.averager.state_dict()}
        return {**averaged, "model": unwrap(self.model).state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(), "scaler": self.scaler.state_dict(), "epoch": epoch,
                "best_score": self.best_score, "stale_validations": self.stale_validations,
                "config": to_dict(self.cfg), "classes": self.classes, "metrics": record,
                "best_record": self.best_record}

    def _resume(self, path: str) -> None:
        state = load_checkpoint(path)
        if state.get("classes") != self.classes:
            raise UserError(f"{path}: checkpoint classes differ from task.classes of the config")
        if "optimizer" not in state:
            raise UserError(f"{path}: holds no training state to resume from (best.pt keeps weights only; "
                            f"resume from last.pt)")
        check_finite(state, path)
        try:
            unwrap(self.model).load_state_dict(state["model"])
        except RuntimeError as e:
            m = self.cfg.model
            raise UserError(f"{path}: weights do not fit model {m.arch}/{m.encoder} of the config "
                            f"({' '.join(str(e).split())[:160]})") from None
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.scaler.load_state_dict(state["scaler"])
        if self.averager is not None:
            if "averager" not in state:
                raise UserError(f"{path}: the config asks for averaging.mode={self.cfg.averaging.mode} but the "
                                f"checkpoint holds no averaged weights")
            self.averager.load_state_dict(state["averager"])
        self.start_epoch = state["epoch"] + 1
        self.best_score = state["best_score"]
        self.stale_validations = state["stale_validations"]
        self.best_record = state.get("best_record")
        if self.runtime.is_main:
            truncate_metrics(self.run_dir, self.start_epoch)
            best = (f"best {self.mode.metric_title} so far {self.best_score:.4f}" if self.best_score >= 0
                    else "not validated yet")
            print(f"resumed from {path} after epoch {self.start_epoch} of {self.cfg.trainer.epochs} ({best})")

    def _report(self, record: dict, per_class: list[float] | None) -> None:
        line = (f"epoch {record['epoch']}/{self.cfg.trainer.epochs}  loss {record['train_loss']:.4f}  "
                f"lr {record['lr']:.2e}")
        m = self.mode.metric
        if record[f"val_{m}"] is not None:
            line += f"  val {self.mode.metric_title} {record[f'val_{m}']:.4f}  best {record[f'best_{m}']:.4f}"
            for key, title in self.mode.extras:  # multiclass: pixel accuracy; binary: IoU
                if record.get(f"val_{key}") is not None:
                    line += f"  {title} {record[f'val_{key}']:.4f}"
        print(line + f"  ({record['seconds']:.0f}s)", flush=True)
        if per_class is not None:
            print(self.mode.format_table(self.classes, per_class), flush=True)


def format_class_table(classes: list[str], values: list[float], columns: int = 4) -> str:
    cells = [f"{name:>12s} {value:.4f}" for name, value in zip(classes, values)]
    return "\n".join("  ".join(cells[i:i + columns]) for i in range(0, len(cells), columns))
