"""The small JSON file that says which kind of tokenizer a directory holds, and with which options."""

from __future__ import annotations

import json
from pathlib import Path

from .errors import InputError

CONFIG_NAME = "tokenizer_config.json"
VOCAB_SIZE = 8000  # pieces of a newly trained tokenizer, by default (`python -m tokenizer.train`, pretraining)
SPECIAL_TOKENS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}


def write_config(directory: Path, config: dict) -> None:
    """Write `config` as `directory/tokenizer_config.json`."""
    (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def read_config(directory: Path) -> dict:
    """The parsed `tokenizer_config.json` of `directory`, or {} if there is none."""
    path = directory / CONFIG_NAME
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path} is not valid UTF-8 JSON ({err}); fix or delete it") from None
    if not isinstance(config, dict):
        raise InputError(f"{path} should hold a JSON object, not {type(config).__name__}")
    return config
