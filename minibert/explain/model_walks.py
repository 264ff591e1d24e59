"""`python -m minibert.explain --model gpt2|t5`: the GPT-2 and T5 walk-throughs on their toys, from the command line.

    python -m minibert.explain --model gpt2 [--ids ID ...] [--layer L] [--head H] [--seed S]
    python -m minibert.explain --model t5   [--ids ID ...] [--layer L] [--head H] [--seed S]
    python -m minibert.explain --model gpt2 --markdown [FILE]     # the section between its markers

Both walk a toy with random weights: --run (a trained BERT run), text (which needs the run's tokenizer) and BERT's
own options (--mask-position, --mask-id, --label, --lr, --plot) are refused with an InputError (exit 2).
"""

from __future__ import annotations

import sys

from ..errors import InputError
from . import gpt_walk, t5_walk
from .toy import DOCUMENT_IDS
from .walk_common import replace_section

NAMES = {"gpt2": "GPT-2", "t5": "T5"}
BERT_ONLY = {"mask_position": "--mask-position", "mask_id": "--mask-id", "label": "--label", "lr": "--lr",
             "plot": "--plot"}


def refuse_bert_options(args) -> None:  # args: minibert.explain.cli.ExplainOptions
    """InputError for what only the BERT walk-through takes."""
    name = NAMES[args.model]
    if args.run is not None:
        raise InputError(f"--run loads trained BERT runs only; --model {args.model} walks through a toy {name} with "
                         f"random weights: leave out --run, or leave out --model {args.model} to explain the run")
    if args.text is not None:
        raise InputError(f"--model {args.model} takes --ids, not text: its toy {name} has no tokenizer")
    given = [option for attr, option in BERT_ONLY.items() if getattr(args, attr) is not None]
    if given:
        raise InputError(f"{', '.join(given)} belong{'s' if len(given) == 1 else ''} to the BERT walk-through, not "
                         f"to --model {args.model}")


def main_model(args) -> int:  # args: minibert.explain.cli.ExplainOptions
    """Run the walk-through `args.model` names; 0 on success, 1 if a value shown does not match the model."""
    refuse_bert_options(args)
    walk = gpt_walk if args.model == "gpt2" else t5_walk
    if args.markdown is not None:  # the section of seed 0 and the ids 1..10, as BERT's worked example
        section = gpt_walk.gpt_markdown() if args.model == "gpt2" else t5_walk.t5_markdown()
        if args.markdown == "-":
            sys.stdout.write(section)
        else:
            replace_section(args.markdown, walk.MARKDOWN_NAME, section)
            print(f"wrote the {NAMES[args.model]} worked example into {args.markdown}")
        return 0
    ids = args.ids if args.ids is not None else DOCUMENT_IDS
    if args.model == "gpt2":
        e = gpt_walk.explain_gpt(gpt_walk.toy_gpt(args.seed), ids, layer=args.layer, head=args.head)
        sys.stdout.write(gpt_walk.render_gpt(e))
    else:
        e = t5_walk.explain_t5(t5_walk.toy_t5(args.seed), ids, layer=args.layer, head=args.head)
        sys.stdout.write(t5_walk.render_t5(e))
    return 0 if e.all_checks_pass else 1
