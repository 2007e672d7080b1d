"""Assess synthetic angiograms: a JSON assessment per image on stdout.

    python -m agent.assess IMAGE [--live PATH] [--reference PATH] [--model DIR] [--scores-only]
    python -m agent.assess --batch cases.jsonl [--model DIR]     # one JSON line per input line
    python -m agent.assess --print-schema

Batch lines are {"image": ..., "live": ..., "reference": ...} (aux optional, paths relative to
the batch file); a bad line prints {"error": ...} in its place and the batch goes on.
Exit status: 0 all assessed, 1 an input could not be assessed, 2 usage or model error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXIT_INPUT, EXIT_USAGE = 1, 2


def parse_args(argv: list[str] | None):
    p = argparse.ArgumentParser(prog="python -m agent.assess", description=__doc__.splitlines()[0])
    p.add_argument("image", nargs="?", help="the synthetic angiogram to assess")
    p.add_argument("--live", help="the live (non-contrast) frame it was generated from")
    p.add_argument("--reference", help="a real contrast angiogram of the same view")
    p.add_argument("--model", help="model directory (default: the shipped model)")
    p.add_argument("--batch", help="JSON-lines file of inputs; outputs one JSON line each, in order")
    p.add_argument("--scores-only", action="store_true", help="heads only, no generated explanations (fast)")
    p.add_argument("--temperature", type=float, default=0.0, help="sampling temperature of explanations (0: greedy)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--print-schema", action="store_true", help="print the assessment JSON schema and exit")
    args = p.parse_args(argv)
    if not args.print_schema and bool(args.image) == bool(args.batch):
        p.error("give one IMAGE or --batch FILE")
    if args.batch and (args.live or args.reference):
        p.error("--live/--reference go inside the batch file's lines")
    return args


def read_input(image: str, live: str | None, reference: str | None, base: Path | None = None):
    """Load and check one case; raises ImageError naming the bad file."""
    from casiqa.imaging import load_angiogram
    from casiqa.inputs import AssessInput

    def resolve(p):
        return None if p is None else (base / p if base is not None and not Path(p).is_absolute() else Path(p))

    inp = AssessInput(
        target=load_angiogram(resolve(image)),
        live=None if live is None else load_angiogram(resolve(live)),
        reference=None if reference is None else load_angiogram(resolve(reference)),
        name=str(image),
    )
    inp.check()
    return inp


def batch_lines(path: Path):
    """(line number, input or error message) for every non-empty line."""
    from casiqa.imaging import ImageError

    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("image"), str):
                raise ValueError('expected an object with an "image" path')
            unknown = set(row) - {"image", "live", "reference", "id"}
            if unknown:
                raise ValueError(f"unknown field(s) {', '.join(sorted(unknown))}")
            yield n, read_input(row["image"], row.get("live"), row.get("reference"), base=path.parent)
        except json.JSONDecodeError as e:
            yield n, f"{path}:{n}: not valid JSON ({e.msg})"
        except (ImageError, ValueError) as e:
            yield n, f"{path}:{n}: {e}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.print_schema:
        from casiqa.schema import json_schema

        print(json.dumps(json_schema(), indent=2))
        return 0
    from casiqa.imaging import ImageError
    from casiqa.paths import DEFAULT_MODEL

    model_dir = Path(args.model) if args.model else DEFAULT_MODEL
    if not (model_dir / "config.json").is_file():
        print(f"error: no model at {model_dir}; pass --model DIR "
              "(python -m casiqa.model.loading --out DIR builds an untrained tiny one)", file=sys.stderr)
        return EXIT_USAGE
    if args.batch and not Path(args.batch).is_file():
        print(f"error: {args.batch}: no such file", file=sys.stderr)
        return EXIT_USAGE
    if args.image:  # read the input before loading the model: bad input fails fast
        try:
            single = read_input(args.image, args.live, args.reference)
        except ImageError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_INPUT

    from transformers.utils import logging as hf_logging

    from casiqa.assessor import Assessor
    from casiqa.model.loading import CheckpointError

    hf_logging.set_verbosity_error()  # stdout is JSON and stderr one-line errors: no load reports or bars
    hf_logging.disable_progress_bar()

    try:
        assessor = Assessor.load(str(model_dir), batch_size=args.batch_size)
    except (CheckpointError, OSError, ValueError) as e:
        print(f"error: cannot load model {model_dir}: {e}", file=sys.stderr)
        return EXIT_USAGE
    generate = not args.scores_only
    if args.image:
        report = assessor.assess([single], generate=generate, temperature=args.temperature)[0]
        print(report.model_dump_json(indent=2))
        return 0
    return run_batch(assessor, Path(args.batch), generate, args.temperature, args.batch_size)


def run_batch(assessor, path: Path, generate: bool, temperature: float, chunk: int) -> int:
    """Stream the batch in chunks: one output line per input line, in order."""
    failed = False
    pending: list = []

    def flush():
        inputs = [x for _, x in pending if not isinstance(x, str)]
        reports = iter(assessor.assess(inputs, generate=generate, temperature=temperature) if inputs else [])
        for _, x in pending:
            print(json.dumps({"error": x}) if isinstance(x, str) else next(reports).model_dump_json(), flush=True)
        pending.clear()

    for n, item in batch_lines(path):
        failed |= isinstance(item, str)
        pending.append((n, item))
        if len(pending) >= chunk:
            flush()
    flush()
    return EXIT_INPUT if failed else 0


if __name__ == "__main__":
    sys.exit(main())
