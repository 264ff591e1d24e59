"""python -m train.generate RUN "prompt" ...: continue a text with a GPT run, or fill the gaps of one with a T5 run.

    python -m train.generate runs/gpt "今天天气"                          # greedy continuation
    python -m train.generate runs/gpt "今天天气" --temperature 0.8 --top-k 20 --seed 1
    python -m train.generate runs/t5 "今天<extra_id_0>很好"               # what goes in the gap
    python -m train.generate runs/t5 "今天天气很好" --mask-span 2:4        # the same gap, by character offsets

RUN is a directory holding `config.json` (with `model_type` "gpt2" or "t5", as `minibert.gpt_t5_checkpoint.save_pretrained`
writes it, or a Hugging Face GPT-2 / T5 export), `model.safetensors`, and `tokenizer/` (minibert's tokenizer).

What the model reads is what it was trained on (`train.causal`, `train.span`): a packed block starts with [CLS] and
a document ends with [SEP].
- GPT reads `[CLS] prompt` and writes until [SEP] (the end of a document) or --max-new-tokens; the continuation
  alone is printed.
- T5 reads `[CLS] text [SEP]` with sentinel k (id V_tok + k, V_tok the tokenizer's vocabulary) in place of each
  gap, and writes `<extra_id_0> span <extra_id_1> span ... [SEP]`; the prompt with each gap filled is printed
  (a gap the output leaves unfilled stays `<extra_id_k>`).
  Gaps are written in the prompt as `<extra_id_0>`, `<extra_id_1>`, ... (T5's spelling; number them from 0 in
  order, as in training), or given by --mask-span START:END, which replaces the prompt's characters
  [START, END) with the next sentinel (repeatable; not together with markers in the prompt).

Decoding is greedy unless --temperature or --top-k is given; either turns sampling on (`minibert.generate`).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from minibert.errors import InputError
from minibert.generate import GenerationConfig, answer_spans, fill_spans, generate
from minibert.gpt import GPT2LMHeadModel
from minibert.gpt_t5_checkpoint import MODELS, load_hf, load_pretrained
from minibert.t5 import T5ForConditionalGeneration
from tokenizer.command import build_parser as build_options_parser
from tokenizer.command import command_main, opt, parse_options
from train.device import resolve_device

SENTINEL = re.compile(r"<extra_id_(\d+)>")


DESCRIPTION = ("Continue a prompt with a GPT run (--objective causal), or fill the gaps of a prompt with a T5 run "
               "(--objective span).")
EPILOG = ("T5 gaps: write <extra_id_0>, <extra_id_1>, ... in the prompt, or use --mask-span. Exit status: 0 done, "
          "2 bad input (one line on stderr).")


@dataclass
class GenerateOptions:
    """The options of `python -m train.generate`: RUN, then the prompts; options may come anywhere among them."""

    run: str = opt(None, "run directory: config.json (model_type gpt2 or t5), model.safetensors and tokenizer/",
                   positional=True, metavar="RUN")
    prompts: list[str] = opt((), "one or more prompts, each generated on its own", positional=True, nargs="+",
                             metavar="PROMPT")
    max_new_tokens: int = opt(50, "write at most this many tokens (T5: sentinels and [SEP] included)")
    temperature: float | None = opt(None, "sample from softmax(logits / T) instead of taking the argmax; none: "
                                    "greedy")
    top_k: int | None = opt(None, "sample among the K most likely tokens only; turns sampling on, at temperature 1 "
                            "unless --temperature is given; none: every token")
    seed: int | None = opt(None, "seed of the sampler, for the same output every time; greedy decoding draws "
                           "nothing; none: a fresh draw each run")
    mask_span: list[str] = opt((), "T5 only: replace the prompt's characters [START, END) (0-based) by a gap; "
                               "repeatable, numbered in order of START", action="append", metavar="START:END")
    json: bool = opt(False, "print one JSON object per prompt: prompt, input_ids, output_ids, text (T5: and spans)",
                     action="store_true")
    device: str = opt("auto", "where the model runs; auto is CUDA when a GPU is visible",
                      choices=("auto", "cpu", "cuda"))


def build_parser() -> argparse.ArgumentParser:
    """The parser generated from `GenerateOptions` (`tokenizer.command.build_parser`)."""
    return build_options_parser(GenerateOptions, DESCRIPTION, "python -m train.generate", EPILOG)


# --- the run ---


@dataclass
class Run:
    model: GPT2LMHeadModel | T5ForConditionalGeneration
    tok: object  # a tokenizer.Tokenizer
    kind: str  # "gpt2" or "t5"

    @property
    def n_sentinels(self) -> int:
        return self.model.config.vocab_size - self.tok.vocab_size


def load_run(path: str | Path) -> Run:
    """The model and tokenizer of RUN; InputError naming what is missing or what kind of run it is instead."""
    path = Path(path)
    if not path.is_dir():
        what = "is a file, not a run directory" if path.exists() else "no such run directory"
        raise InputError(f"{path}: {what}; give the directory of a run pretrained with --objective causal or span")
    config_path = path / "config.json"
    if not config_path.is_file():
        raise InputError(f"{path}: no config.json; point at a run written by python -m train.pretrain")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"{config_path}: cannot be read ({e})") from None
    kind = config.get("model_type") if isinstance(config, dict) else None
    if kind not in MODELS:
        what = "a BERT model" if kind in (None, "bert", "electra") else f"model_type {kind!r}"
        raise InputError(f"{path} holds {what}, which does not generate text; generation needs a run pretrained "
                         "with --objective causal (GPT) or --objective span (T5)")
    config_cls = MODELS[kind][0]
    own = {f for f in config_cls.__dataclass_fields__} | {"model_type"}
    model = load_pretrained(path) if set(config) <= own else load_hf(path)  # minibert's own, or an HF export
    if not (path / "tokenizer").is_dir():
        raise InputError(f"{path}: no tokenizer/ directory; the run's tokenizer is needed to read the prompt")
    import tokenizer

    tok = tokenizer.load(path / "tokenizer")
    if model.config.vocab_size < tok.vocab_size:
        raise InputError(f"{path}: the model's vocabulary ({model.config.vocab_size}) is smaller than its "
                         f"tokenizer's ({tok.vocab_size}); they are not from the same run")
    return Run(model.eval(), tok, kind)


# --- prompts ---


def mark_spans(prompt: str, spans: list[str]) -> str:
    """The prompt with each START:END character range replaced by <extra_id_k>, k counted in order of START."""
    ranges = []
    for text in spans:
        start, sep, end = text.partition(":")
        try:
            ranges.append((int(start), int(end)))
        except ValueError:
            raise InputError(f"--mask-span {text!r}: give START:END, two character offsets such as 2:4") from None
        if not sep:
            raise InputError(f"--mask-span {text!r}: give START:END, two character offsets such as 2:4")
    ranges.sort()
    for i, (start, end) in enumerate(ranges):
        if not 0 <= start < end <= len(prompt):
            raise InputError(f"--mask-span {start}:{end} is not a range of the prompt's {len(prompt)} characters "
                             "(0 <= START < END <= length)")
        if i and start < ranges[i - 1][1]:
            raise InputError(f"--mask-span {ranges[i - 1][0]}:{ranges[i - 1][1]} and {start}:{end} overlap")
    out, last = [], 0
    for k, (start, end) in enumerate(ranges):
        out += [prompt[last:start], f"<extra_id_{k}>"]
        last = end
    return "".join(out + [prompt[last:]])


def encode_piece(tok, text: str, first: bool) -> list[int]:
    """The ids of `text`; a piece that does not start the prompt loses the word-boundary token a SentencePiece
    tokenizer puts at the start of every text ("▁", which decodes to nothing), as it would have mid-text."""
    ids = tok.encode_plain([text])[0] if text else []
    if not first and not text[:1].isspace():
        while ids and ids[0] not in tok.special_ids and tok.decode([ids[0]]) == "":
            ids = ids[1:]
    return ids


def encode_span_prompt(run: Run, prompt: str) -> list[int]:
    """[CLS] text [SEP] with sentinel ids V_tok + k at the <extra_id_k> markers."""
    tok, ids, last = run.tok, [run.tok.cls_token_id], 0
    for match in SENTINEL.finditer(prompt):
        k = int(match.group(1))
        if k >= run.n_sentinels:
            raise InputError(f"{match.group(0)}: the model has {run.n_sentinels} sentinels, <extra_id_0> to "
                             f"<extra_id_{run.n_sentinels - 1}>")
        ids += encode_piece(tok, prompt[last:match.start()], first=last == 0)
        ids.append(tok.vocab_size + k)
        last = match.end()
    if last == 0:
        raise InputError("a T5 run fills gaps: mark each with <extra_id_0>, <extra_id_1>, ... in the prompt, or "
                         "give --mask-span START:END")
    ids += encode_piece(tok, prompt[last:], first=False)
    return ids + [tok.sep_token_id]


def show(run: Run, ids: list[int]) -> str:
    """Text of ids that may hold sentinels, each written <extra_id_k>."""
    out, piece = [], []
    for i in ids + [None]:
        if i is None or i >= run.tok.vocab_size:
            out.append(run.tok.decode(piece, skip_special_tokens=True))
            piece = []
            if i is not None:
                out.append(f"<extra_id_{i - run.tok.vocab_size}>")
        else:
            piece.append(i)
    return "".join(out)


# --- generation ---


SEED_LIMIT = 2**64  # torch's generators take seeds below this


def check_args(args) -> None:
    """Every option's range, named as the command line names it, before the model is read."""
    checks = [
        (args.max_new_tokens >= 1, "--max-new-tokens must be at least 1"),
        (args.temperature is None or math.isfinite(args.temperature), "--temperature must be a finite number"),
        (args.temperature is None or args.temperature > 0,
         "--temperature must be above 0 (sampling divides the scores by it); for greedy decoding leave out "
         "--temperature and --top-k"),
        (args.top_k is None or args.top_k >= 1, "--top-k must be at least 1 (leave it out to sample among every "
                                                "token)"),
        (args.seed is None or 0 <= args.seed < SEED_LIMIT, "--seed must be between 0 and 2**64 - 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise InputError(message)


def check_length(run: Run, prompt: str, n_prompt: int, max_new_tokens: int) -> None:
    """A GPT model reads at most n_positions tokens, the prompt's and the new ones together; InputError saying
    which of the two to shorten."""
    limit = getattr(run.model.config, "n_positions", None)
    if limit is None or n_prompt + max_new_tokens <= limit:
        return
    if n_prompt >= limit:
        raise InputError(f"the prompt {prompt[:20]!r}{'...' if len(prompt) > 20 else ''} is {n_prompt} tokens "
                         f"([CLS] included), and the model reads at most {limit} (n_positions) with the new ones; "
                         "shorten the prompt")
    raise InputError(f"--max-new-tokens {max_new_tokens}: the prompt takes {n_prompt} of the model's {limit} "
                     f"positions (n_positions), so at most {limit - n_prompt} new tokens fit; lower --max-new-tokens "
                     "or shorten the prompt")


def settings_from(args) -> GenerationConfig:
    sample = args.temperature is not None or args.top_k is not None
    return GenerationConfig(max_new_tokens=args.max_new_tokens, do_sample=sample,
                            temperature=args.temperature if args.temperature is not None else 1.0,
                            top_k=args.top_k, seed=args.seed)


def continue_prompt(run: Run, prompt: str, settings: GenerationConfig, device) -> dict:
    ids = [run.tok.cls_token_id] + run.tok.encode_plain([prompt])[0]
    check_length(run, prompt, len(ids), settings.max_new_tokens)
    out = generate(run.model, torch.tensor([ids], device=device), settings)[0].tolist()
    new = out[len(ids):]
    return {"prompt": prompt, "input_ids": ids, "output_ids": new,
            "text": run.tok.decode(new, skip_special_tokens=True)}


def fill_prompt(run: Run, prompt: str, settings: GenerationConfig, device) -> dict:
    """T5's answer, and the prompt with each gap replaced by the span the answer gives it (a gap the answer does
    not fill stays <extra_id_k>)."""
    ids = encode_span_prompt(run, prompt)
    out = generate(run.model, torch.tensor([ids], device=device), settings)[0].tolist()[1:]  # after the start token
    sentinels = range(run.tok.vocab_size, run.model.config.vocab_size)
    eos = run.model.config.eos_token_id
    spans = answer_spans(out, sentinels, eos)  # <s0> span <s1> span ... [SEP]
    filled = fill_spans(ids[1:-1], out, sentinels, eos, keep_unfilled=True)
    return {"prompt": prompt, "input_ids": ids, "output_ids": out, "text": show(run, filled),
            "spans": {show(run, [k]): run.tok.decode(v, skip_special_tokens=True) for k, v in spans.items()}}


@command_main
def main(argv: list[str] | None = None) -> int:
    args, _ = parse_options(GenerateOptions, argv, DESCRIPTION, "python -m train.generate", EPILOG)
    check_args(args)
    settings = settings_from(args)
    if any(not p.strip() for p in args.prompts):
        raise InputError("a prompt is empty; give the text to continue (GPT) or to fill (T5)")
    device = resolve_device(args.device)
    run = load_run(args.run)
    if run.kind == "gpt2" and args.mask_span:
        raise InputError("--mask-span is for a T5 run; this run is GPT, which continues the prompt")
    if run.kind == "t5" and args.mask_span and len(args.prompts) > 1:
        raise InputError("--mask-span applies to one prompt; give one prompt with it")
    run.model.to(device)
    for prompt in args.prompts:
        if run.kind == "gpt2":
            result = continue_prompt(run, prompt, settings, device)
        else:
            if args.mask_span:
                if SENTINEL.search(prompt):
                    raise InputError("give gaps either as <extra_id_k> markers in the prompt or by --mask-span, "
                                     "not both")
                prompt = mark_spans(prompt, args.mask_span)
            result = fill_prompt(run, prompt, settings, device)
        print(json.dumps(result, ensure_ascii=False) if args.json else result["text"], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
