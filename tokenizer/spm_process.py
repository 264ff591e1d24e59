"""SentencePiece's training, run in a process of its own: `spm_training.train_model` starts it and waits for it.

Why a process: SentencePiece trains in C++ and does not return to Python until it is done, so a signal sent to a
command that trains a tokenizer would wait for the end of training (tens of seconds on a large corpus) before the
command could stop. A child process is stopped at once (`spm_training.train_model` terminates it when the command is
interrupted), and it leaves nothing behind: the model comes back as bytes, written by the parent.

The protocol, all bytes:
    argv[1]   the trainer's options, as a JSON object (`SentencePieceTrainer.train` keyword arguments)
    stdin     the training sentences, UTF-8, one per line ("\\n" never occurs inside one)
    stdout    the model's bytes (status 0)
    stderr    SentencePiece's error message (status `FAILED`)

    python tokenizer/spm_process.py '{"vocab_size": 8000, "seed": 0, ...}' < sentences.txt > spm.model
"""

from __future__ import annotations

import io
import json
import signal
import sys

FAILED = 3  # exit status when SentencePiece refused to train (its message on stderr)


def die_with_parent() -> None:
    """On Linux, have the kernel kill this process when its parent dies (even by SIGKILL), so that an orphaned
    training never runs on; elsewhere a parent that is killed outright leaves it to finish on its own."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def main() -> int:
    # Ctrl-C reaches the whole process group: this process then ends at once, silently; the parent reports it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    die_with_parent()
    import sentencepiece as spm

    options = json.loads(sys.argv[1])
    seed = options.pop("seed")
    sentences = sys.stdin.buffer.read().decode("utf-8").split("\n")
    if sentences and sentences[-1] == "":
        sentences.pop()  # the one after the last newline
    spm.set_random_generator_seed(seed)
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_writer=model, **options)
    except RuntimeError as err:
        sys.stderr.write(str(err))
        return FAILED
    sys.stdout.buffer.write(model.getvalue())
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
