"""Where the explained model comes from: a run directory, the latest pretraining run, or a toy built on the spot.

    load_run(RUN)              RUN/config.json + RUN/model.safetensors, and RUN/tokenizer/ when there is one
    latest_run(RUNS_DIR)       the newest RUNS_DIR/pretrain-*/ that holds a BERT model and its tokenizer
    spot_model(text, seed)     a character tokenizer trained now on built-in text and `text`, and a toy model
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from ..errors import InputError
from ..heads import BertForMaskedLM
from .toy import toy_model

# The text the spot tokenizer learns its characters from, beside the sentence being explained (so that none of the
# sentence's characters becomes [UNK]). A few sentences of everyday Chinese, with the digits and Latin letters.
BUILTIN_TEXT = """\
今天天气很好，我们去公园散步吧。
明天下雨，记得带伞。
这家饭店的菜很好吃，服务也不错，下次还来。
房间太小了，而且很吵，不推荐。
我喜欢读书，也喜欢听音乐和看电影。
他每天早上六点起床，七点去学校上课。
中国的首都是北京，上海是最大的城市。
人民日报报道了新年的消息。
机器学习让计算机从数据中学会规律。
一句话里的每个字都是一个词元。
The quick brown fox jumps over the lazy dog. 0123456789
"""
SPOT_POSITIONS = 512  # the spot toy's longest sequence (the toy's own 32 is too short for most sentences)


def load_run(run_dir: str | Path):
    """(model, tokenizer or None) from a run directory: RUN/config.json, RUN/model.safetensors, RUN/tokenizer/."""
    from ..checkpoint import load_pretrained

    path = Path(run_dir)
    if not path.is_dir():
        raise InputError(f"--run {run_dir}: no such directory")
    model, report = load_pretrained(path, BertForMaskedLM)
    if report.newly_initialised:
        print(f"note: {run_dir} has no MLM head ({len(report.newly_initialised)} tensors); its weights are random",
              file=sys.stderr)
    tok = None
    if (path / "tokenizer").is_dir():
        import tokenizer

        tok = tokenizer.load(path / "tokenizer")
    return model.eval(), tok


def _is_bert_run(path: Path) -> bool:
    """Whether `path` holds a BERT model (its config.json names no other model_type) and a tokenizer/."""
    if not ((path / "model.safetensors").is_file() and (path / "tokenizer").is_dir()):
        return False
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(config, dict) and config.get("model_type", "bert") == "bert"


def latest_run(runs_dir: str | Path) -> Path | None:
    """The newest `runs_dir/pretrain-*/` holding a BERT model.safetensors and a tokenizer/ (by name, which is a
    timestamp, then modification time), or None."""
    runs = [p for p in Path(runs_dir).glob("pretrain-*") if _is_bert_run(p)]
    return max(runs, key=lambda p: (p.name, p.stat().st_mtime)) if runs else None


def spot_model(text: str, seed: int = 0):
    """(toy model, tokenizer): a SentencePiece character tokenizer trained now on BUILTIN_TEXT and `text`, and the
    toy model (random weights under `seed`) with a row of W per character."""
    import tokenizer

    lines = BUILTIN_TEXT.splitlines() + [text]
    # A character model's vocabulary is the characters it saw; the size asked for is only an upper bound.
    tok = tokenizer.train(lines, 100_000, model_type="char", character_coverage=1.0, num_threads=1, verbose=False)
    model = toy_model(seed, vocab_size=tok.vocab_size, max_position_embeddings=SPOT_POSITIONS)
    return model, tok


def token_text(tok) -> Callable[[int], str]:
    """The text of a token id, for display: its vocabulary entry, or "#id" when that is blank."""

    def text(i: int) -> str:
        s = tok.id_to_token(i) if hasattr(tok, "id_to_token") else tok.decode([i])
        return s.strip() or f"#{i}"

    return text
