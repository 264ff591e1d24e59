"""The command line, `python -m minibert.explain`: choose the model and the sequence, explain, print, plot.

Which model: `--run RUN` loads a trained run; text without `--run` takes the latest pretraining run (a
`RUNS_DIR/pretrain-*/` with a BERT model and a tokenizer), or, when there is none, the toy model with a character
tokenizer trained on the spot; ids alone (or nothing: the word indices 1..10 of the example of
《预训练与微调的详细方法》, section 4.3) go through the toy model.
A note on stderr says which, whenever the choice was not given.

`--model gpt2` and `--model t5` walk through a toy GPT-2 or T5 instead (model_walks.py).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from tokenizer.command import build_parser as build_options_parser
from tokenizer.command import command_main, opt, parse_options

from ..errors import InputError
from .capture import explain
from .plot import plot_attention, plot_directory
from .render import render
from .sources import latest_run, load_run, spot_model, token_text
from .toy import DOCUMENT_IDS, toy_model

DEFAULT_LR = 0.01  # --lr's default; the option itself defaults to None, so that --model gpt2|t5 can refuse it


DESCRIPTION = ("Print, stage by stage, the formulas BERT applies to one sequence, with shapes and numbers: "
               "embeddings, one layer's attention and feed-forward, the MLM prediction at a [MASK], its loss, and one "
               "SGD step. Without --run: a toy model with random weights and the ids 1..10 (the example of "
               "《预训练与微调的详细方法》); text without --run goes through the latest pretraining run, or, when there "
               "is none, through the toy model with a tokenizer built on the spot.")
EPILOG = "exit status: 0 on success, 1 if a value shown does not match the model, 2 on bad input"


@dataclass
class ExplainOptions:
    """The options of `python -m minibert.explain`; the text may come before or after them."""

    model: str = opt("bert", "which system to walk through; gpt2: a toy GPT-2 with random weights, its causal mask, "
                     "shifted next-token loss and greedy next token; t5: a toy T5 with random weights, a "
                     "span-corruption example, encoder, decoder and cross-attention masks, relative position buckets "
                     "and the loss. Both take --ids, --layer, --head, --seed and --markdown, not --run",
                     choices=("bert", "gpt2", "t5"))
    text: str | None = opt(None, "text to explain, through the run's tokenizer (without --run: the latest "
                           "RUNS_DIR/pretrain-*/, else a character tokenizer trained on the spot)", positional=True,
                           nargs="?")
    ids: list[int] | None = opt(None, "token ids instead of text; none: 1..10", metavar="ID")
    run: str | None = opt(None, "a trained run directory (config.json, model.safetensors, tokenizer/) instead of the "
                          "toy model", metavar="RUN_DIR")
    runs_dir: str = opt("runs", "where the latest pretraining run is looked for when text is given without --run",
                        metavar="DIR")
    layer: int = opt(0, "encoder layer to explain, from 0")
    head: int = opt(0, "attention head to explain, from 0")
    mask_position: int | None = opt(None, "position replaced by [MASK], from 0; none: the middle")
    mask_id: int | None = opt(None, "id of [MASK]; none: the tokenizer's, or 15 for the toy model")
    label: int | None = opt(None, "the id the loss asks for at the masked position; none: the original id there")
    lr: float | None = opt(None, f"learning rate of the SGD step; none: {DEFAULT_LR}")
    seed: int = opt(0, "seed of the toy model's weights")
    plot: str | None = opt(None, "also write one attention heatmap PNG per head of the layer", metavar="DIR")
    markdown: str | None = opt(None, "print the worked example of docs/MATH.md (ignores the other options); with "
                               "FILE, rewrite that section of FILE in place", nargs="?", const="-", metavar="FILE")


def build_parser() -> argparse.ArgumentParser:
    """The parser generated from `ExplainOptions` (`tokenizer.command.build_parser`)."""
    return build_options_parser(ExplainOptions, DESCRIPTION, "python -m minibert.explain", EPILOG)


def choose_model(args: ExplainOptions):
    """(model, tokenizer or None, the run directory or None) for the options, saying on stderr what was chosen
    when the options left it open."""
    if args.run is not None:
        return (*load_run(args.run), args.run)
    if args.text is None:
        return toy_model(args.seed), None, None
    run = latest_run(args.runs_dir)
    if run is not None:
        print(f"note: no --run given: explaining with {run}, the latest {args.runs_dir}/pretrain-*/ with a model and "
              "a tokenizer", file=sys.stderr)
        return (*load_run(run), run)
    model, tok = spot_model(args.text, args.seed)
    print(f"note: no --run given and no {args.runs_dir}/pretrain-*/ with a model and a tokenizer: explaining with the "
          f"toy model (random weights, --seed {args.seed}) and a character tokenizer of {tok.vocab_size} tokens "
          "trained just now on built-in text and yours, so its guesses mean nothing; train a model with "
          "`python -m train.pretrain`, or pass --run", file=sys.stderr)
    return model, tok, None


@command_main
def main(argv: list[str] | None = None) -> int:
    args, _ = parse_options(ExplainOptions, argv, DESCRIPTION, "python -m minibert.explain", EPILOG)
    if args.model != "bert":
        from .model_walks import main_model

        return main_model(args)
    if args.markdown is not None:
        from .worked_example import worked_example_markdown, write_section

        if args.markdown == "-":
            sys.stdout.write(worked_example_markdown())
        else:
            write_section(args.markdown)
            print(f"wrote the worked example into {args.markdown}")
        return 0
    if args.text is not None and args.ids is not None:
        raise InputError("give either text or --ids, not both")
    if args.plot is not None:
        plot_directory(args.plot)  # fail before the long printout, not after it
    model, tok, run = choose_model(args)
    if args.text is not None:
        if tok is None:
            raise InputError("text needs a tokenizer: pass --run RUN_DIR (with RUN_DIR/tokenizer/), or use --ids")
        ids = list(tok.encode(args.text).input_ids)
    elif args.ids is not None:
        ids = args.ids
    elif run is None:
        ids = DOCUMENT_IDS
    else:
        raise InputError("with --run, give text or --ids")
    mask_id = args.mask_id
    if mask_id is None:
        if tok is not None:
            mask_id = tok.mask_token_id
        elif run is not None:
            raise InputError(f"{run} has no tokenizer/ to say which id is [MASK]: pass --mask-id")
    e = explain(model, ids, layer=args.layer, head=args.head, mask_position=args.mask_position,
                label=args.label, lr=DEFAULT_LR if args.lr is None else args.lr, mask_token_id=mask_id,
                id_to_text=token_text(tok) if tok is not None else None)
    sys.stdout.write(render(e))
    if args.plot is not None:
        for path in plot_attention(e, args.plot):
            print(f"wrote {path}")
    return 0 if e.all_checks_pass else 1
