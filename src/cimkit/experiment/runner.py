"""Run an experiment: load data, train (or reuse) the baseline, evaluate every variant, write results."""

from __future__ import annotations

import datetime as _dt
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

import cimkit
from cimkit.data import Dataset, TensorLoader, load_dataset
from cimkit.errors import CimkitError, ConfigError
from cimkit.experiment.config import ExperimentConfig
from cimkit.experiment.context import RunContext, config_hash
from cimkit.experiment.hooks import report_hook_sections, run_result_hooks
from cimkit.experiment.outdir import OutDirLock, check_out_dir
from cimkit.experiment.sections import variant_sections
from cimkit.experiment.variant import VARIANTS
from cimkit.io import atomic_write_json
from cimkit.models import create
from cimkit.report import write_report
from cimkit.tasks import get_task
from cimkit.train import fit, load_model, save_model
from cimkit.train.strategy import SingleProcess, Strategy
from cimkit.utils import available_cores, machine_info, resolve_device, seed_everything, set_threads

log = logging.getLogger(__name__)


def _dataset_info(data: Dataset) -> dict[str, Any]:
    return {"name": data.name, "n_train": int(data.x_train.shape[0]), "n_test": int(data.x_test.shape[0]),
            "num_classes": int(data.num_classes), "input_shape": list(data.x_train.shape[1:]),
            "task": data.task}  # fmt: skip


def build_model(cfg: ExperimentConfig, data: Dataset) -> torch.nn.Module:
    """The experiment's (untrained) model for ``data``: the dataset's description plus ``model_args``.
    A key of both (e.g. ``block_size`` on text, set by the window length) may repeat the dataset's
    value in ``model_args``; a different value is a :class:`ConfigError`."""
    spec = data.model_spec()
    for key, value in cfg.model_args.items():
        if key in spec and value != spec[key]:
            raise ConfigError(f"model_args.{key} = {value!r}: the dataset '{data.name}' sets {key} = {spec[key]!r}; "
                              f"leave it out of model_args (change the dataset's arguments instead)")  # fmt: skip
    try:
        return create(cfg.model, **{**spec, **cfg.model_args})
    except ConfigError as e:
        raise ConfigError(f"model_args: {e}") from None


def check_variants(cfg: ExperimentConfig, model: torch.nn.Module, data: Dataset) -> None:
    """Every variant's ``check`` on the untrained model, before any training (ConfigError names it)."""
    example = data.x_test[:2]
    for i, spec in enumerate(cfg.variant_specs()):
        try:
            VARIANTS.get(spec.kind)(spec.name, spec.cfg).check(model, example)
        except ConfigError as e:
            raise ConfigError(f"variants[{i}] ('{spec.name}'): {e}") from None


def run_experiment(
    cfg: ExperimentConfig,
    out_dir: str | Path,
    *,
    data_dir: str | Path | None = None,
    progress: bool = True,
    retrain: bool = False,
    strategy: Strategy | None = None,
) -> dict[str, Any]:
    """Run ``cfg``; write ``out_dir/results.json`` (after every variant) and ``out_dir/report.html``.

    The output folder is checked (writable, not another experiment's) and locked before any work.
    The trained baseline is cached under ``out_dir/cache`` keyed by dataset, model and recipe, so a
    re-run reuses it (``retrain=True`` forces training). An interrupted baseline training resumes from
    its last epoch checkpoint. Every variant is validated against the model's shapes first.

    With a distributed ``strategy`` (``cimkit.dist.DDPStrategy``, set up; every rank calls this) the
    baseline and every fine-tuning step train with DDP, chip sweeps are split over the ranks, and
    only rank 0 checks, locks and writes the output folder; every rank returns the same results.
    """
    out = Path(out_dir)
    st = strategy or SingleProcess()
    comp = getattr(st, "compression", None)
    if st.is_distributed and comp is not None and comp != cfg.train.compression_config():
        raise ConfigError(
            f"train.grad_compression: the strategy compresses gradients with {comp.to_dict()} but the experiment's "
            f"[train] table asks for {cfg.train.compression_config().to_dict()}; build the strategy from "
            f"cfg.train.compression_config() (what `cimkit run --nproc` does)"
        )
    if not st.is_main:
        return _run(cfg, out, data_dir=data_dir, progress=False, retrain=retrain, st=st)
    check_out_dir(out, cfg.to_dict())
    with OutDirLock(out):
        return _run(cfg, out, data_dir=data_dir, progress=progress, retrain=retrain, st=st)


def _run(cfg: ExperimentConfig, out: Path, *, data_dir: str | Path | None, progress: bool,
         retrain: bool, st: Strategy) -> dict[str, Any]:  # fmt: skip
    cache = out / "cache"
    n = cfg.threads
    if n and st.is_distributed:  # the ranks on one machine share its cores
        n = max(1, min(n, available_cores() // int(os.environ.get("LOCAL_WORLD_SIZE", st.world_size))))
    threads = set_threads(n) if n else torch.get_num_threads()
    device = st.device if st.is_distributed else resolve_device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' was asked for but torch sees no CUDA device; use device = \"cpu\"")
    specs = cfg.variant_specs()
    seed_everything(cfg.seed)
    t_start = time.perf_counter()

    data = load_dataset(cfg.dataset, data_dir=data_dir, progress=progress, **cfg.dataset_args)
    task = get_task(data.task, **data.task_options)
    model = build_model(cfg, data)
    check_variants(cfg, model, data)
    shape = tuple(data.x_train.shape[1:])
    key = config_hash(cfg.dataset, cfg.dataset_args, cfg.model, cfg.model_args, cfg.train.to_dict(), cfg.seed, shape)
    weights = cache / f"baseline-{key}.safetensors"
    baseline: dict[str, Any] = {"key": key, "units": {"train_seconds": "s", "seconds_per_epoch": "s",
                                                      "history.loss": task.units.get("loss", "nats"),
                                                      "history.seconds": "s"}}  # fmt: skip
    st.barrier()  # rank 0 has checked the output folder
    reuse = weights.is_file() and not retrain
    if reuse:
        try:
            meta = load_model(weights, model)  # DataError (model unchanged) if damaged
            baseline.update(reused=True, **meta)
            log.info("reusing trained baseline %s", weights)
        except cimkit.DataError as e:
            log.warning("%s; retraining the baseline", e)
            reuse = False
    if not reuse:
        torch.manual_seed(cfg.train.seed)
        loader = TensorLoader(data.x_train, data.y_train, cfg.train.batch_size, shuffle=True, seed=cfg.train.seed)
        ckpt = cache / f"baseline-{key}-train"
        if retrain and ckpt.exists() and st.is_main:
            shutil.rmtree(ckpt)
        st.barrier()
        res = fit(model, loader, cfg.train, device=device, checkpoint_dir=ckpt, progress=progress, task=task,
                  strategy=st if st.is_distributed else None)  # fmt: skip
        meta = {"train_seconds": sum(h["seconds"] for h in res.history),
                "seconds_per_epoch": res.seconds_per_epoch, "history": res.history}  # fmt: skip
        if res.comm:
            meta["comm"] = res.comm
        if st.is_main:
            save_model(weights, model, meta)
        baseline.update(reused=False, **meta)
    model.to(device).eval()

    ctx = RunContext(data=data, baseline=model, train_cfg=cfg.train, seed=cfg.seed, device=device, out_dir=out,
                     cache_dir=cache, baseline_key=key, task=task, eval_batch_size=cfg.eval_batch_size,
                     progress=progress, strategy=st)  # fmt: skip
    results: dict[str, Any] = {
        "cimkit_version": cimkit.__version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "experiment": cfg.to_dict(),
        "seed": cfg.seed,
        "threads": threads,
        "world_size": st.world_size,
        "machine": machine_info(),
        "dataset": _dataset_info(data),
        "task": task.describe(),
        "model": {"name": cfg.model, "params": sum(p.numel() for p in model.parameters())},
        "baseline": baseline,
        "variants": [],
        "complete": False,
    }
    res_path = out / "results.json"
    for spec in specs:
        log.info("variant %s (%s)", spec.name, spec.kind)
        t0 = time.perf_counter()
        torch.manual_seed(cfg.seed)
        variant = VARIANTS.get(spec.kind)(spec.name, spec.cfg)
        r = variant.run(ctx)
        if task.primary not in r.metrics:
            raise CimkitError(f"variant kind '{spec.kind}' did not report the task's primary metric '{task.primary}'")
        run_result_hooks(cfg, ctx, spec, r)  # what concerns add to every variant (e.g. its cost)
        r.model = None
        results["variants"].append({"name": spec.name, "kind": spec.kind, "config": spec.cfg.to_dict(),
                                    "metrics": r.metrics, "units": r.units, "details": r.details,
                                    "seconds": time.perf_counter() - t0})  # fmt: skip
        if st.is_main:
            atomic_write_json(res_path, results)  # nothing lost if a later variant is interrupted
    results["complete"] = True
    results["seconds"] = time.perf_counter() - t_start
    if st.is_main:
        atomic_write_json(res_path, results)
        write_report(results, out / "report.html", sections=variant_sections(results) + report_hook_sections(results))
    st.barrier()
    return results
