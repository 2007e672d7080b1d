"""Training speed and peak memory of a fine-tuning recipe: a few SFT steps, timed.

    python -m benchmarks.bench_train --config finetune/recipes/tiny-cpu.yaml --max_steps 6
    python -m benchmarks.bench_train --config finetune/recipes/qwen2.5-vl-3b.yaml \\
        --model_name_or_path random:qwen2.5-vl-3b --data data/phantom-small --max_steps 8 --json_out bench-3b.json

Takes every `finetune.sft` argument. Unless the command line sets them, it runs 6 optimiser
steps, skips the stages before SFT (stage 1, the pixel warm-up, and what needs it: the prompts
show the rows' MOS instead of the stage-1 heads' scores, no profile scorer; the language
warm-up), the head-only steps, evaluation, checkpoints and the test split, and writes into a
temporary output_dir: what it times is the recipe's SFT step (LM + heads, LoRA where the recipe
asks for it). Prints, and writes as JSON with --json_out,
the median optimiser step after the first --skip ones, samples/s, tokens per sample, trainable
parameters and peak memory (CUDA: allocated and reserved by torch; CPU: peak resident set);
--profile_step N also prints the operators that took most of step N's time (torch.profiler).
`random:NAME` builds a published architecture with random weights (no download): the memory
and speed are the real model's, its loss is not.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time

# what the benchmark sets unless the command line does
# (with stage 1 skipped, so are what is built on it: the prompts show the MOS instead of the stage-1
# heads' scores, and there is no profile scorer, whose stage 1p reads stage 1's pixel cache)
DEFAULTS = {"max_steps": "6", "pixel_warmup_epochs": "0", "head_warmup_steps": "0", "prompt_scores": "mos",
            "profile_scores": "false", "lm_warmup_steps": "0", "eval_strategy": "no", "save_strategy": "no",
            "test_at_end": "false", "report_to": "none", "logging_steps": "1"}


def with_defaults(argv: list[str], output_dir: str) -> list[str]:
    given = {a.split("=", 1)[0].removeprefix("--") for a in argv if a.startswith("--")}
    out = list(argv)
    for key, value in {**DEFAULTS, "output_dir": output_dir}.items():
        if key not in given:
            out += [f"--{key}", value]
    return out


class _Counting:
    """Wraps the trainer's training_step to count the rows and real tokens it is fed (the
    collator may run in worker processes, where a count would be lost)."""

    def __init__(self, step):
        self.step, self.tokens, self.rows = step, 0, 0

    def __call__(self, model, inputs, *args, **kwargs):
        ids = inputs["input_ids"]
        self.rows += ids.shape[0]
        self.tokens += int(inputs["attention_mask"].sum()) if "attention_mask" in inputs else ids.numel()
        return self.step(model, inputs, *args, **kwargs)


def measure(argv: list[str], skip: int = 2, profile_step: int = 0) -> dict:
    import torch
    from transformers import TrainerCallback

    from finetune.sft import prepare

    cuda = torch.cuda.is_available()

    def sync():
        if cuda:
            torch.cuda.synchronize()

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.ends: list[float] = []
            self.profiler, self.table = None, ""

        def on_step_begin(self, args, state, control, **kw):
            if profile_step and state.global_step + 1 == profile_step:
                from torch.profiler import ProfilerActivity, profile

                activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
                self.profiler = profile(activities=activities)
                self.profiler.__enter__()

        def on_train_begin(self, args, state, control, **kw):
            sync()
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            self.ends.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            sync()
            self.ends.append(time.perf_counter())
            if self.profiler is not None:
                self.profiler.__exit__(None, None, None)
                events = self.profiler.key_averages()
                sort = "self_device_time_total" if cuda else "self_cpu_time_total"
                self.table = events.table(sort_by=sort, row_limit=15)
                if cuda:  # how much of the step the GPU was busy: below 1, it waits on the host
                    busy_s = sum(e.self_device_time_total for e in events) / 1e6
                    self.table += f"\nGPU busy {busy_s:.2f} s of a {self.ends[-1] - self.ends[-2]:.2f} s step\n"
                self.profiler = None

    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        t0 = time.perf_counter()
        run = prepare(with_defaults(argv, tmp))
        setup_s = time.perf_counter() - t0
        trainer, ta = run.trainer, run.training_args
        counting = _Counting(trainer.training_step)
        trainer.training_step = counting
        timer = StepTimer()
        trainer.add_callback(timer)
        trainer.train()
    steps = [b - a for a, b in zip(timer.ends, timer.ends[1:], strict=False)]
    if len(steps) <= skip:
        raise SystemExit(f"only {len(steps)} optimiser step(s) ran; need more than --skip {skip} (raise --max_steps)")
    per_step = ta.per_device_train_batch_size * ta.gradient_accumulation_steps * max(ta.world_size, 1)
    step_s = statistics.median(steps[skip:])
    model = trainer.model
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    out = {
        "model": run.model_args.model_name_or_path or "tiny",
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "bf16": bool(ta.bf16), "gradient_checkpointing": bool(ta.gradient_checkpointing),
        "lora": bool(run.model_args.use_peft), "image_size": run.args.image_size,
        "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "trainable_m": round(trainable / 1e6, 2),
        "samples_per_step": per_step, "steps_timed": len(steps) - skip,
        "median_step_s": round(step_s, 3), "first_step_s": round(steps[0], 2),
        "samples_per_s": round(per_step / step_s, 2),
        "tokens_per_sample": round(counting.tokens / max(counting.rows, 1)),
        "setup_s": round(setup_s, 1),
        "final_loss": next((h["loss"] for h in reversed(trainer.state.log_history) if "loss" in h), None),
    }
    if timer.table:
        out["profile"] = f"optimiser step {profile_step}, sorted by {'GPU' if cuda else 'CPU'} time:\n{timer.table}"
    if cuda:
        out["peak_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        out["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
    else:
        out["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=False)
    parser.add_argument("--json_out", default="", help="also write the figures here as JSON")
    parser.add_argument("--skip", type=int, default=2, help="first optimiser steps left out of the median")
    parser.add_argument("--profile_step", type=int, default=0,
                        help="profile this optimiser step (1-based) with torch.profiler and print its top operators")
    parser.add_argument("--help", "-h", action="store_true")
    own, rest = parser.parse_known_args(argv)
    if own.help:
        print(__doc__)
        return 0
    result = measure(rest, skip=own.skip, profile_step=own.profile_step)
    table = result.pop("profile", "")
    text = json.dumps(result, indent=2)
    print(table + text)
    if own.json_out:
        with open(own.json_out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
