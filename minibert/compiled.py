"""torch.compile for minibert: every padded path, the sparse MLM head and the re-padded unpadded path in one graph.

`torch.compile` splits a model into several graphs wherever it meets something it cannot trace; each split (a graph
break) costs a return to Python and stops fusions across it. Two things in minibert have a data-dependent shape:
the sparse MLM head keeps only the labelled positions (`nonzero`), and unpadding keeps only the real tokens. Letting
dynamo trace such operators (`capture_dynamic_output_shape_ops`) keeps them inside the graph, with the number of
kept rows as a symbolic size, so a new count does not recompile. tests/test_compile.py counts the graphs. The
per-sequence attention of the CPU (`unpad_attention="rows"`) loops in Python over the row lengths and the nested
path leaves the graph on the CPU: for a compiled unpadded model choose "repad" there.
"""

from __future__ import annotations

import torch
from torch import nn


def compile_model(model: nn.Module, **kwargs) -> nn.Module:
    """`torch.compile(model, **kwargs)`, with data-dependent output shapes traced instead of breaking the graph."""
    torch._dynamo.config.capture_dynamic_output_shape_ops = True
    return torch.compile(model, **kwargs)
