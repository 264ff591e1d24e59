"""Plot: one heatmap per head of the explained layer, A = softmax(Q K^T / sqrt(D) + M), as PNG files.

Token labels are drawn in a font that covers them (Chinese too, when one is installed), else as "#id".
"""

from __future__ import annotations

from pathlib import Path

from ..rundir import OutDir, RunKind, check_usable, claim, inspect_out
from .capture import Explanation

# Fonts tried for token labels, so that Chinese tokens are drawn when such a font is installed.
LABEL_FONTS = ["DejaVu Sans", "Noto Sans CJK SC", "Noto Sans SC", "WenQuanYi Zen Hei", "Source Han Sans SC",
               "SimHei", "Microsoft YaHei", "PingFang SC"]


def _drawable_labels(tokens: list[str], ids: list[int]) -> tuple[list[str], list[str]]:
    """The installed fonts among LABEL_FONTS, and each token's label: its text if they can draw it, else "#id"."""
    from matplotlib import font_manager, ft2font

    installed = {f.name: f.fname for f in font_manager.fontManager.ttflist}
    families = [name for name in LABEL_FONTS if name in installed]
    covered: set[int] = set()
    for name in families:
        covered.update(ft2font.FT2Font(installed[name]).get_charmap())
    labels = [tok if all(ord(ch) in covered for ch in tok) else f"#{i}" for tok, i in zip(tokens, ids)]
    return families, labels


PLOTS = RunKind("attention-plots", "folder of attention plots")


def plot_directory(directory: str | Path) -> OutDir:
    """`directory` checked as an output, writing nothing: a new or empty directory, or one that holds earlier plots
    of this command (`minibert.rundir`), whose files are replaced; anything else is refused."""
    out = inspect_out(Path(directory), PLOTS, option="--plot")
    check_usable(out)
    return out


def plot_name(layer: int, head: int) -> str:
    return f"attention_layer{layer}_head{head}.png"


def plot_attention(e: Explanation, directory: str | Path) -> list[Path]:
    """One PNG heatmap per head of the explained layer: A = softmax(Q K^T / sqrt(D) + M), rows the querying tokens,
    columns the tokens attended to. Returns the paths written."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure  # no pyplot: no global backend, nothing left open

    H = e.layer_probs.shape[0]
    run = claim(plot_directory(directory), PLOTS, [plot_name(e.layer, h) for h in range(H)])
    families, labels = _drawable_labels(e.model_tokens, e.model_ids)
    T = len(e.model_ids)
    size = max(4.0, 0.4 * T + 2.0)
    paths = []
    with run, rc_context({"font.family": families or ["sans-serif"]}):
        for h in range(H):
            fig = Figure(figsize=(size + 1.0, size))
            ax = fig.add_subplot()
            image = ax.imshow(e.layer_probs[h].float().cpu().numpy(), vmin=0.0, vmax=1.0, cmap="viridis")
            ax.set_xticks(range(T), labels, rotation=90)
            ax.set_yticks(range(T), labels)
            ax.set_xlabel("key: the token attended to")
            ax.set_ylabel("query: the token attending")
            ax.set_title(f"layer {e.layer}, head {h}: softmax(QK^T / sqrt(D))")
            fig.colorbar(image, ax=ax, label="attention probability")
            path = run.path / plot_name(e.layer, h)
            fig.savefig(path, dpi=100, bbox_inches="tight")
            paths.append(path)
    return paths
