"""One sequence through BertForMaskedLM and one SGD step, stage by stage: the formula, the shapes, the numbers.

    python -m minibert.explain                           # the example of 《预训练与微调的详细方法》: word indices 1..10
    python -m minibert.explain --ids 1 2 3 4 5 --layer 1 --head 1
    python -m minibert.explain "今天天气很好"              # the latest runs/pretrain-*/, else a toy built on the spot
    python -m minibert.explain "今天天气很好" --run RUN_DIR  # a trained model and its tokenizer
    python -m minibert.explain --plot plots/             # attention heatmaps of every head of the chosen layer
    python -m minibert.explain --markdown                # the worked example of docs/MATH.md
    python -m minibert.explain --model gpt2              # a toy GPT-2: causal mask, shifted next-token loss
    python -m minibert.explain --model t5                # a toy T5: span corruption, three masks, position buckets

Shapes: B batch (1 here), T tokens, C hidden size, H heads, D head size (C = H * D), I feed-forward size,
V vocabulary size, L layers.

Nothing here is a second copy of the model. The model hands over the tensors of one forward pass through its
documented seam, the trace (`output_trace=True`, minibert/trace.py); the values recomputed for display (one_hot @ W,
Q K^T / sqrt(D), the softmax, the projections and residual sums, from parameters read by their checkpoint names) are
compared with the tensors the model produced, and each comparison prints "matches the model: yes". No hook, and no
path of a submodule: the model can be rearranged under the walk-through as long as its trace is filled.

Without a run the model is a toy: random weights fixed by `--seed`, small enough that every vector fits on a
line, and in float64, so that the printed digits are the same on every machine.

The walk-through depends on the model, never the other way round. Its parts, in reading order:
- toy.py: the toy model;
- capture.py: `explain`, the traced forward pass and the SGD step, into an `Explanation`;
- render.py: `render`, the Explanation as text;
- plot.py: `plot_attention`, heatmaps;
- sources.py: which model and tokenizer (a run, the latest run, or a toy built on the spot);
- cli.py: the command line; worked_example.py: docs/MATH.md's section, generated;
- gpt_walk.py, t5_walk.py: the same for GPT-2 and T5 on their own toys (`--model gpt2|t5`), with walk_common.py
  (what they share) and model_walks.py (their command line).
"""

from .capture import Check, Explanation, explain
from .cli import build_parser, main
from .plot import plot_attention
from .render import render
from .toy import DOCUMENT_IDS, TOY_CONFIG, TOY_MASK_ID, toy_model

__all__ = [
    "Check",
    "DOCUMENT_IDS",
    "Explanation",
    "TOY_CONFIG",
    "TOY_MASK_ID",
    "build_parser",
    "explain",
    "main",
    "plot_attention",
    "render",
    "toy_model",
]
