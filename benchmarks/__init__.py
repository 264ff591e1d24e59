"""Benchmarks: minibert against Hugging Face `transformers` (BERT, GPT-2, T5) on the same weights, inputs and device.

    python -m benchmarks                  # CUDA grid if a GPU is present, else a reduced CPU grid
    python -m benchmarks --quick          # a smoke run of a few seconds
    python -m benchmarks --help           # every option
    python -m benchmarks --out benchmarks/results/cpu --threads 1   # regenerate the committed CPU results

Results go to a new runs/bench-YYYYmmdd-HHMMSS under the working directory unless --out names a directory; the
committed results in benchmarks/results/ are rewritten only when --out names them (`cli`).

Every comparison builds one `transformers` model, copies its weights into each minibert variant through
`minibert.hf.from_hf_model` (GPT-2 and T5: `minibert.gpt_t5_checkpoint.from_hf_model`), checks that all variants agree on
outputs (and, for training steps, on the loss and the gradients of named parameters) before anything is timed, then
times the variants alternately (A B A B ...).

Modules, one job each:
    cli        the command line
    grid       which cases run (workload x size x sequence length x precision x variants)
    data       review texts, People's Daily lines, the character vocabulary and the batches of every workload
    variants   building the models under comparison with identical weights
    workloads  what one timed run does (inference or a training step), and the outputs it compares
    gate       the correctness check that stops the run when variants disagree
    timing     warm-up, alternated repeats, median and spread
    memory     peak memory of one run (CUDA allocator, or resident set size on the CPU)
    device     device choice, synchronisation and a description of the hardware
    flops      model FLOPs per batch, measured matmul peak and model FLOPs utilisation
    tokenizer_speed  tokenizer throughput: minibert's SentencePiece against the `tokenizers` WordPiece
    runner     running the cases and collecting the figures
    report     results.json and results.md
    plots      PNG figures
"""
