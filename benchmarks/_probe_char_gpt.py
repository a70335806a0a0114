"""Probe: how fast does the default char_gpt reach a validation loss on tinyshakespeare on this CPU?

Trains ``char_gpt`` (default size, ~0.83 M parameters) on non-overlapping 128-character windows
with the ``sequence`` targets (every position predicts its next character), AdamW (betas 0.9/0.99,
weight decay 0.1 on matrices and embeddings), linear warm-up then cosine decay to lr/10 over the
planned steps, and prints the validation loss (nats/char) on a fixed subset of validation windows
against steps, tokens and wall time; the full validation split is scored at the end. Training stops
early at ``--max-minutes``. A one-off recipe search, not part of ``make bench``.
"""

from __future__ import annotations

import math
import sys
import time

from _bench import Report, parser, setup_threads


def main() -> None:
    p = parser("probe_char_gpt", __doc__)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--epochs", type=float, default=2.0, help="passes over the training windows")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=50, help="warm-up steps")
    p.add_argument("--eval-every", type=int, default=100, help="steps between validation points")
    p.add_argument("--eval-windows", type=int, default=128, help="validation windows per intermediate point")
    p.add_argument("--max-minutes", type=float, default=11.0, help="wall-clock cap on training")
    p.add_argument("--target", type=float, default=1.95, help="validation loss goal (nats/char)")
    args = p.parse_args()
    setup_threads(args.threads)

    import torch

    from cimkit.data import load_dataset
    from cimkit.models import create
    from cimkit.tasks import MetricSums, get_task

    ds = load_dataset("tinyshakespeare", data_dir=args.data_dir, seq_len=args.seq_len, targets="sequence")
    task = get_task(ds.task)
    torch.manual_seed(0)
    model = create("char_gpt", **ds.model_spec())
    n_params = sum(q.numel() for q in model.parameters())
    decay = [q for q in model.parameters() if q.dim() >= 2]
    no_decay = [q for q in model.parameters() if q.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.99))  # fmt: skip
    loader = ds.train_loader(batch_size=args.batch, seed=0, drop_last=True)
    total = max(1, round(args.epochs * len(loader)))

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        t = (step - args.warmup) / max(1, total - args.warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))

    g = torch.Generator().manual_seed(1)
    sub = torch.randperm(len(ds.x_test), generator=g)[: args.eval_windows]  # fixed validation subset

    @torch.no_grad()
    def val_loss(x: torch.Tensor, y: torch.Tensor) -> float:
        model.eval()
        sums = MetricSums()
        for i in range(0, len(x), 128):  # batches of windows
            task.accumulate(sums, model(x[i : i + 128]), y[i : i + 128])
        model.train()
        return task.finalize(sums)["loss"]

    report = Report("probe_char_gpt", args.quick)
    print(f"char_gpt {n_params} parameters; {len(ds.x_train)} train / {len(ds.x_test)} val windows of "
          f"{args.seq_len}; batch {args.batch}; {len(loader)} steps per epoch; {total} steps planned; "
          f"{args.threads} threads", flush=True)  # fmt: skip
    step, t_train, t0 = 0, 0.0, time.perf_counter()
    deadline = t0 + 60 * args.max_minutes
    first_hit = None

    def point() -> None:
        nonlocal first_hit
        v = val_loss(ds.x_test[sub], ds.y_test[sub])
        row = {"step": step, "tokens": step * args.batch * args.seq_len, "train_s": round(t_train, 1),
               "wall_s": round(time.perf_counter() - t0, 1), "val_subset_loss": round(v, 4),
               "lr": lr_at(min(step, total - 1))}  # fmt: skip
        report.row(**row)
        print(row, flush=True)
        if first_hit is None and v <= args.target:
            first_hit = row

    point()
    done = False
    while not done:
        for xb, yb in loader:
            ts = time.perf_counter()
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            loss = task.loss(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            t_train += time.perf_counter() - ts
            if step % args.eval_every == 0 or step == total:
                point()
            if step >= total or time.perf_counter() > deadline:
                done = True
                break
    if step % args.eval_every and step != total:
        point()
    full = val_loss(ds.x_test, ds.y_test)
    print(f"full validation loss after {step} steps ({t_train:.0f} s of training, "
          f"{time.perf_counter() - t0:.0f} s wall): {full:.4f} nats/char", flush=True)  # fmt: skip
    report.row(step=step, tokens=step * args.batch * args.seq_len, train_s=round(t_train, 1),
               wall_s=round(time.perf_counter() - t0, 1), val_full_loss=round(full, 4))  # fmt: skip
    report.goal(f"full validation loss <= {args.target} nats/char", full, f"<= {args.target}", full <= args.target)
    if first_hit is not None:
        report.goal("training seconds to reach the target on the validation subset", first_hit["train_s"],
                    "well under 480 s", first_hit["train_s"] < 480)  # fmt: skip
    report.print()
    report.write(args.out)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
