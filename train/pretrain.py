"""`python -m train.pretrain`: pretraining (BERT's masked words, ELECTRA, GPT's next token or T5's span corruption),
on one CPU or many GPUs, resumable exactly.

With no arguments it trains a SentencePiece tokenizer on the built-in Chinese text (People's Daily, January 1998,
plus the training split of the product reviews) and a small BERT by masked-language modelling on the reviews, 30%
of the tokens masked, for about twenty minutes on one CPU core, and leaves a run directory that
`python -m train.finetune` picks up. (In-domain text and MosaicBERT's masking rate are what measured best for the
built-in task, docs/RESULTS.md; `--builtin-corpus all --mlm-probability 0.15` is BERT's recipe on all of it.) `--objective causal` trains a GPT-2 and `--objective span` a
T5 instead, of the preset's size, on the same corpus and tokenizer in the same loop (`train/objectives.py`); their
run directories also feed `python -m train.generate`:

    runs/pretrain-YYYYmmdd-HHMMSS/
        config.json, model.safetensors   the latest weights (Hugging Face key names)
        tokenizer/                        the tokenizer the ids came from
        checkpoints/step_NNNNNN/          the last K full checkpoints (weights + optimiser, RNG and data state)
        data/                             the token shards and block layout (train/shards.py), so a restart
                                          does not tokenize again, and a stopped tokenization continues
        metrics.jsonl, loss.png, args.json
        .minibert-run, .minibert-lock     the marker listing what the run wrote, and the lock of the process that
                                          runs it (minibert.rundir)

Where each part is: the options and their checks in `train/pretrain_options.py`, the corpus, tokenizer and blocks
in `train/pretrain_data.py` (the corpus streamed into token shards by `train/shards.py`, so memory is flat in its
size), the state a checkpoint restores in `train/pretrain_state.py`, the held-out evaluation in
`train/pretrain_eval.py`, the checkpoints and the run directory in `train/checkpoints.py`, what is printed in
`train/pretrain_report.py`. This file holds the command, the loop and one step of it.

Resume, force, faults: `--resume` continues the run with its own options (those given again may only be the
budget and bookkeeping ones, `MAY_CHANGE_ON_RESUME`) from its latest readable checkpoint, and repairs a top-level
copy of the weights that a kill left older than that checkpoint. `--force` removes only what the run's marker
lists. Ctrl-C (SIGINT) and SIGTERM stop the loop between two steps and save that step's checkpoint,
so `--resume` gives the same losses as a run that was never stopped; exit status 130 and 143.

Distributed: `torchrun --nproc_per_node N -m train.pretrain ...` (NCCL on GPUs, gloo on CPUs). `--batch-size` is
the global batch: every rank masks the same global batch with the same generator and takes its own slice, so
the results do not depend on how the batch is split over ranks and micro-batches.
"""

from __future__ import annotations

import dataclasses
import math
import shlex
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from minibert import InputError
from minibert.compiled import compile_model
from tokenizer.command import Stopped, command_main
from train.checkpoints import (Resumed, append_metrics, latest_checkpoint, load_checkpoint, plan_out_dir,
                               plot_losses, remove_save_leftovers, save_checkpoint, set_aside_unreadable)
from tokenizer.command import parse_options
from train.cli import write_json
from train.device import Dist, autocast, setup_distributed
from train.optim import lr_at, set_lr
from train.packing import block_batch
from train.pretrain_data import CorpusSource, Data, claim_run, give_up, open_corpus, prepare_data
from train.pretrain_eval import describe_eval, evaluate
from train.pretrain_options import (PretrainArgs, check_args, check_batch_split, check_init, model_config,
                                    resume_args)
from train.pretrain_report import Outcome, print_header, print_summary
from train.pretrain_state import TrainState, build_state
from train.resume import given_by_value
from train.signals import StopSignals


@command_main
def main(argv: list[str] | None = None) -> int:
    args, given = parse_options(PretrainArgs, argv, __doc__.split("\n\n")[0], "python -m train.pretrain")
    return run(args, given)


def run(args: PretrainArgs, given: set[str] | None = None) -> int:
    """Check every option and the run directory without writing anything, then train. `given`: the options set on
    the command line (what --resume takes anew); without it, those that differ from their defaults.

    A new run that fails before its first checkpoint removes what it wrote (and its directory, if it made it),
    but for the token shards of a tokenization stopped by a signal, which the same command continues from."""
    given = given_by_value(args) if given is None else set(given)
    check_args(args)
    d, device = setup_distributed(args.device)
    check_batch_split(args, d)
    out = plan_out_dir(args, d.main)
    args, resumed, changed = settle_options(args, given, d, out.path)
    source = open_corpus(args)
    # The directory is this process's from here to the end (its lock), and lists what the run writes (its marker).
    owned = claim_run(out, args, resumed is not None) if d.main else None
    if d.world > 1:
        dist.barrier()
    try:
        with out_of_memory_hint(args, d):
            code = train(args, d, device, out.path, source, resumed, changed)
    except BaseException as err:
        if owned is not None and resumed is None and latest_checkpoint(out.path) is None:
            give_up(owned, interrupted=isinstance(err, (KeyboardInterrupt, Stopped)))  # keeps only token shards
        raise
    finally:
        if owned is not None:
            owned.close()
    if d.world > 1:
        dist.destroy_process_group()
    return code


def settle_options(args: PretrainArgs, given: set[str], d: Dist, out: Path
                   ) -> tuple[PretrainArgs, Resumed | None, list[str]]:
    """The options the run goes on with: on --resume the checkpoint's own (with those `given` that may change,
    listed in `changed`), checked again; with --init the --init run's model; otherwise the model config of
    --preset, --config and --set, checked before any work."""
    resumed, changed = None, []
    if args.resume:
        resumed = load_checkpoint(out)
        args, changed = resume_args(resumed.state["args"], args, given)
        check_args(args)
        check_batch_split(args, d)
        step = resumed.state["step"]
        if "max_steps" in changed and args.max_steps and args.max_steps < step:
            raise InputError(f"--max-steps {args.max_steps}: the run is already at step {step}; give at least {step}")
    elif args.init:
        check_init(args, given)
    else:
        model_config(args, args.vocab_size)
    if args.max_steps == 0:
        args.max_steps = None
    return args, resumed, changed


@contextmanager
def out_of_memory_hint(args: PretrainArgs, d: Dist):
    """Running out of memory (torch's OutOfMemoryError on a GPU, the CPU allocator's RuntimeError) becomes
    InputError: a batch too large for the machine is a choice of options, and the message says which to change."""
    try:
        yield
    except (RuntimeError, MemoryError) as err:
        text = str(err)
        if not (isinstance(err, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in text
                or "can't allocate memory" in text):
            raise
        share = args.batch_size // d.world
        micro = args.micro_batch_size or share
        smaller = max((m for m in range(1, max(1, micro // 4) + 1) if share % m == 0), default=1)
        raise InputError(f"out of memory in a training step of --batch-size {args.batch_size}"
                         f"{f' (--micro-batch-size {micro})' if args.micro_batch_size else ''} at --max-seq-length "
                         f"{args.max_seq_length}: lower --batch-size, or set --micro-batch-size (e.g. "
                         f"{smaller}) to run each batch in smaller pieces with the same result") from None


# ----------------------------------------------------------------------------------------------------------------
# the loop


@dataclass
class Runner:
    """How the steps run on this machine: the model as trained (compiled, DDP-wrapped), the autocast context,
    and this rank's share of the global batch, cut into micro-batches of `micro`, `accum` of them."""

    model: torch.nn.Module
    amp: object
    share: int
    micro: int
    accum: int


def runner_for(model: torch.nn.Module, args: PretrainArgs, d: Dist, device: torch.device) -> Runner:
    """bf16 autocast and TF32 on CUDA (fused AdamW is `make_adamw`'s); torch.compile on request; DDP across ranks."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    train_model = compile_model(model) if args.compile else model
    if d.world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            train_model, device_ids=[device.index] if device.type == "cuda" else None)
    share = args.batch_size // d.world
    micro = args.micro_batch_size or share
    return Runner(train_model, autocast(device), share, micro, share // micro)


def train_step(s: TrainState, r: Runner, data: Data, args: PretrainArgs, d: Dist, device) -> tuple[float, dict, float]:
    """One optimiser step; returns the step's loss (the objective's weighted sum), its terms and the lr.

    The global batch is drawn and masked identically on every rank (the same generator state everywhere), each
    loss term counted over all of it; then each rank takes its rows. Each term's micro-batch mean is weighed by
    its share of the global count, L = Σ_k w_k Σ_micro mean_k · n_k / N_k, so accumulation gives the gradient of
    one big batch; DDP averages over ranks, hence the factor world. Then clip, step, zero."""
    objective = data.objective
    lr = lr_at(s.step, peak_lr=args.lr, warmup_steps=args.warmup_steps, total_steps=s.total_steps or 10**9,
               schedule=args.schedule)
    set_lr(s.optimizer, lr)
    batch = objective.make_batch(block_batch(data.train_blocks, s.stream.next_batch()), s.mask_gen)
    global_counts = objective.counts(batch)
    mine = {k: v[d.rank * r.share:(d.rank + 1) * r.share] for k, v in batch.items()}
    terms = dict.fromkeys(global_counts, 0.0)
    for m in range(r.accum):
        rows = slice(m * r.micro, (m + 1) * r.micro)
        part = {k: v[rows].to(device, non_blocking=True) for k, v in mine.items()}
        share_of = {k: n / global_counts[k] for k, n in objective.counts(part).items()}
        sync = nullcontext() if (d.world == 1 or m == r.accum - 1) else r.model.no_sync()
        with sync, r.amp:
            means = objective.losses(r.model, part)
            loss = sum(objective.weights[k] * means[k] * share_of[k] * d.world for k in means)
        loss.backward()
        for k in means:
            terms[k] += means[k].detach().float() * share_of[k]
    if args.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(s.model.parameters(), args.max_grad_norm)
    s.optimizer.step()
    s.optimizer.zero_grad(set_to_none=True)
    term_values = torch.stack([torch.as_tensor(terms[k], device=device) for k in terms])
    if d.world > 1:  # each rank holds its rows' part of each global mean
        dist.all_reduce(term_values)
    terms = dict(zip(terms, term_values.tolist()))
    return sum(objective.weights[k] * v for k, v in terms.items()), terms, lr


class TimeBudget:
    """--max-time as a number of steps, measured over steps start+5 .. start+10 (evaluations included, as they
    share the budget), so that a resumed run replays the same steps; `None` budget: --max-steps alone."""

    def __init__(self, args: PretrainArgs, s: TrainState):
        self.seconds = None if args.max_time is None else args.max_time * 60.0
        self.max_steps, self.eval_every = args.max_steps, args.eval_every
        self.calibrate_at = s.step + 10 if s.total_steps is None else None
        self.start = None

    def update(self, s: TrainState, eval_seconds: float) -> bool:
        """After a step: True when the step budget was just set."""
        if self.calibrate_at is not None and s.step == self.calibrate_at - 5:
            self.start = (s.step, s.train_seconds)
        if self.calibrate_at is None or s.step != self.calibrate_at:
            return False
        per_step = (s.train_seconds - self.start[1]) / (s.step - self.start[0])
        per_step += eval_seconds / self.eval_every
        total = s.step + max(1, int((self.seconds - s.train_seconds - eval_seconds) / per_step))
        s.total_steps = max(min(total, self.max_steps) if self.max_steps is not None else total, s.step)
        self.calibrate_at = None
        return True

    def spent(self, s: TrainState) -> bool:
        return self.seconds is not None and s.train_seconds >= self.seconds and s.step < (s.total_steps or 0)


class Loop:
    """What the steps of the loop share: the run's options, its state and data, how steps run, and the three
    things done between steps (a metrics record, an evaluation, a checkpoint)."""

    def __init__(self, args: PretrainArgs, d: Dist, device: torch.device, out: Path, s: TrainState, r: Runner,
                 data: Data, saved_step: int | None):
        self.args, self.d, self.device, self.out, self.s, self.r, self.data = args, d, device, out, s, r, data
        self.saved_step = saved_step  # the step the newest checkpoint holds (None: none by this process yet)

    def log(self, record: dict) -> None:
        if self.d.main:
            append_metrics(self.out / "metrics.jsonl", record)

    def evaluate(self) -> dict:
        return evaluate(self.s.model, self.data.eval_objective, self.data.eval_blocks, self.args, self.device, self.d,
                        self.r.amp)

    def checkpoint(self) -> None:
        if self.saved_step == self.s.step:
            return
        if self.d.main:
            save_checkpoint(self.out, self.s.model, self.s.optimizer, self.s.to_dict(self.args), self.args.keep_last)
        if self.d.world > 1:
            dist.barrier()
        self.saved_step = self.s.step


def train(args: PretrainArgs, d: Dist, device: torch.device, out: Path, source: CorpusSource,
          resumed: Resumed | None, changed: list[str]) -> int:
    t_setup = time.perf_counter()
    if resumed is not None and d.main:
        set_aside_unreadable(resumed)
        remove_save_leftovers(out)
    # 1. Corpus -> tokenizer -> token shards -> blocks (views of the shards), a fixed share held out; the objective.
    data = prepare_data(args, out, source, d, resumed is not None)
    # 2. Model, optimiser and the rest of the state a checkpoint restores; the options the run was made with.
    s = build_state(args, d, device, out, data, resumed, changed)
    if d.main:
        write_json(out / "args.json", dataclasses.asdict(args))
    # 3. Speed: autocast, compile, DDP, micro-batches.
    r = runner_for(s.model, args, d, device)
    print_header(args, d, device, out, data.n_texts, data, s.model, time.perf_counter() - t_setup)
    loop = Loop(args, d, device, out, s, r, data, s.step if resumed else None)
    with StopSignals() as stop:
        outcome = run_steps(loop, stop)  # 4. to 9.
    # 10. The loss curve and the summary.
    if d.main:
        plot_losses(out / "metrics.jsonl", out / "loss.png", data.objective.eval_loss_name)
        print_summary(out, outcome, s, tokens_per_step(args), data.objective)
    return outcome.exit_code


def tokens_per_step(args: PretrainArgs) -> int:
    """Tokens of the corpus per step, B·T for every objective (span corruption's encoder reads fewer, its decoder
    the ~0.3 T targets): tokens/s says how fast each objective gets through the same text."""
    return args.batch_size * args.max_seq_length


def run_steps(loop: Loop, stop: StopSignals) -> Outcome:
    """Steps 4 to 9 of the loop: until the budget is spent, a signal arrives or the loss stops being finite."""
    args, d, s = loop.args, loop.d, loop.s
    budget, window_tokens = TimeBudget(args, s), 0
    resume_hint = f"continue with: python -m train.pretrain --out {shlex.quote(str(loop.out))} --resume"
    # 4. An evaluation before the first step: the starting point and, for a time budget, its cost.
    t0 = time.perf_counter()
    if s.step == 0:
        loop.log({"step": 0, **loop.evaluate()})
    eval_seconds = time.perf_counter() - t0
    bar = tqdm(total=s.total_steps, initial=s.step, disable=not (d.main and args.progress), unit="step",
               dynamic_ncols=True, desc="pretraining")
    window_start = time.perf_counter()
    try:
        while s.total_steps is None or s.step < s.total_steps:
            # 5. A signal is acted on here, between two steps: the checkpoint is exactly the state after a step.
            if stop.received(d, loop.device):
                loop.checkpoint()
                return Outcome(f"{stop.name} received: stopped after step {s.step}, checkpoint saved; {resume_hint}",
                               128 + stop.signum)
            # 6. One optimiser step (batch, micro-batches, clip, step); a loss that is not finite ends the run.
            t_step = time.perf_counter()
            step_loss, terms, lr = train_step(s, loop.r, loop.data, args, d, loop.device)
            if not math.isfinite(step_loss):
                return Outcome(f"stopped: the loss became {step_loss} at step {s.step + 1}; the last good checkpoint "
                               "is kept", 1)
            s.step += 1
            s.train_seconds += time.perf_counter() - t_step
            window_tokens += tokens_per_step(args)
            # 7. A time budget becomes a step budget after a few measured steps (so a resumed run is exact).
            if budget.update(s, eval_seconds):
                bar.total = s.total_steps
                bar.refresh()
            # 8. Log, evaluate, checkpoint.
            at_end = s.step == s.total_steps
            if s.step % args.log_every == 0 or at_end:
                now = time.perf_counter()
                tps = window_tokens / max(now - window_start, 1e-9)
                window_tokens, window_start = 0, now
                parts = {f"loss_{k}": v for k, v in terms.items()} if len(terms) > 1 else {}
                loop.log({"step": s.step, "loss": step_loss, **parts, "lr": lr, "tokens_per_s": tps,
                          "time_s": s.train_seconds})
                bar.set_postfix(loss=f"{step_loss:.3f}", lr=f"{lr:.1e}", tok_s=f"{tps:,.0f}", refresh=False)
            bar.update(1)
            if s.step % args.eval_every == 0 or at_end:
                t0 = time.perf_counter()
                last_eval = loop.evaluate()
                eval_seconds = time.perf_counter() - t0
                s.train_seconds += eval_seconds
                loop.log({"step": s.step, **last_eval})
                if d.main:
                    bar.write(f"step {s.step}: {describe_eval(last_eval)}")
            if s.step % args.save_every == 0 or at_end:
                loop.checkpoint()
            # 9. The other ways a run ends early: --stop-at-step, and --max-time spent.
            if args.stop_at_step is not None and s.step >= args.stop_at_step:
                loop.checkpoint()
                return Outcome(f"paused at step {s.step}; {resume_hint}")
            if budget.spent(s):
                if s.step % args.eval_every:  # the run ends here: report where it got to
                    loop.log({"step": s.step, **loop.evaluate()})
                loop.checkpoint()
                return Outcome(f"stopped by --max-time after {s.step} steps")
    except (KeyboardInterrupt, Stopped):  # a second signal, in the middle of a step: that step is not saved
        last = latest_checkpoint(loop.out)
        return Outcome(f"interrupted again during step {s.step + 1}: nothing saved for it; --resume continues from "
                       f"{last.name if last else 'the start'}", 130)
    finally:
        bar.close()
    return Outcome("done")


if __name__ == "__main__":
    sys.exit(main())
