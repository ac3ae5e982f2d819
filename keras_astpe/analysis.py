"""Figure 3 of the AST-PE paper for any model: how similar the learned position vectors are.

The paper reads its learned position tables through cosine-similarity matrices:

- Absolute embeddings (`absolute`, `conditional_absolute`; a `T x F x dim` table): "the
  similarity in time (frequency) is obtained by concatenating all the embeddings
  corresponding to the same time (frequency), and then calculating the pairwise cosine
  similarity", giving a `T x T` and an `F x F` matrix (Figure 3a, 3b). `time_alibi` learns
  one embedding per frequency band only (`F x dim`, time comes from ALiBi): its `F x F`
  matrix compares those embeddings directly.
- Learned relative attention (`learned_relative`): the pairwise cosine similarity of the
  rows of `E^t` (one per time distance, `2T-1` rows) and of `E^f` (`2F-1` rows) of a block
  (Figure 3c, 3d). As in the original code, row `r` is the distance
  `key - query = r - (N - 1)`: negative distances are keys in the past (lower frequency
  bands), positive in the future (higher bands).

Which tables a model has comes from its `PositionEncoding` (`keras_astpe.models`): the
`none`, `alibi_2d` and `conditional` encodings have none (ALiBi biases are fixed functions
of the distance, and the PEG of CPVT computes its embeddings from the input).

    model = keras.saving.load_model("model.keras")
    for panel in position_similarities(model):   # numpy matrices
        print(panel.name, panel.matrix.shape)
    plot_position_similarities(model, "figures/")  # PNGs, one per table (and block)

The figures are drawn with matplotlib's object-oriented API on the Agg canvas (no display).
"""

import dataclasses
import os
import textwrap

import keras
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from keras_astpe.layers import LearnedRelativeBias
from keras_astpe.models.backbone import ASTBackbone
from keras_astpe.models.position_encodings import PE_KINDS, get_position_encoding

_AXIS_SYMBOL = {"time": "t", "frequency": "f"}
_COLORMAP = "RdBu_r"  # diverging: +1 red, 0 white, -1 blue


@dataclasses.dataclass(frozen=True)
class SimilarityMatrix:
    """One panel of Figure 3: the pairwise cosine similarity of position vectors on one axis.

    Attributes:
        matrix: `(n, n)` float64 cosine similarities, symmetric, in [-1, 1].
        ticks: `(n,)` what each row stands for: the position (`0..n-1`) for absolute
            embeddings, the distance `key - query` (`-(N-1)..N-1`) for relative ones.
        axis: `"time"` or `"frequency"`.
        table: `"absolute"` (a position table added to the patches) or `"relative"`
            (`E^t`/`E^f` of a learned relative attention block).
        block: the encoder block of a relative table; None for absolute ones.
    """

    matrix: np.ndarray
    ticks: np.ndarray
    axis: str
    table: str
    block: int | None = None

    @property
    def name(self):
        """e.g. `absolute_time`, `relative_frequency_block_3`."""
        suffix = "" if self.block is None else f"_block_{self.block}"
        return f"{self.table}_{self.axis}{suffix}"


def cosine_similarity(vectors):
    """`(n, d)` -> `(n, n)` pairwise cosine similarity of the rows (float64).

    A zero row has similarity 0 with every row (itself included) instead of NaN.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2:
        raise ValueError(f"`vectors` must be 2-D (n, d). Received shape {vectors.shape}.")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    return np.clip(unit @ unit.T, -1.0, 1.0)


def absolute_similarity(embeddings):
    """Figure 3a/3b: similarities of an absolute position table.

    Args:
        embeddings: `(T, F, dim)` (one vector per grid cell), or `(F, dim)` (one per
            frequency band, `time_alibi`).

    Returns:
        `[time, frequency]` `SimilarityMatrix`es for a `(T, F, dim)` table: the vector of
        time `t` is `embeddings[t]` flattened (the `F` embeddings of that time,
        concatenated), that of frequency `f` is `embeddings[:, f]` flattened. `[frequency]`
        for an `(F, dim)` table.
    """
    embeddings = np.asarray(embeddings, dtype=np.float64)
    if embeddings.ndim == 2:
        return [_panel(embeddings, "frequency", "absolute")]
    if embeddings.ndim != 3:
        raise ValueError("`embeddings` must be (T, F, dim) or (F, dim). "
                         f"Received shape {embeddings.shape}.")
    time, freq, _ = embeddings.shape
    by_time = embeddings.reshape(time, -1)
    by_freq = embeddings.transpose(1, 0, 2).reshape(freq, -1)
    return [_panel(by_time, "time", "absolute"), _panel(by_freq, "frequency", "absolute")]


def relative_similarity(time_embeddings, freq_embeddings, block=None):
    """Figure 3c/3d: similarities of the rows of `E^t` `(2T-1, d)` and `E^f` `(2F-1, d)`.

    The rows are in key-minus-query order (as `LearnedRelativeBias` indexes them):
    row `r` is the distance `key - query = r - (N - 1)`. Returns `[time, frequency]`
    `SimilarityMatrix`es whose ticks are these distances, from `-(N-1)` to `N-1`.
    """
    panels = []
    for axis, table in (("time", time_embeddings), ("frequency", freq_embeddings)):
        table = np.asarray(table, dtype=np.float64)
        if table.ndim != 2 or table.shape[0] % 2 != 1:
            raise ValueError(f"The {axis} table must be (2N-1, d), one row per distance. "
                             f"Received shape {table.shape}.")
        size = (table.shape[0] + 1) // 2
        panels.append(_panel(table, axis, "relative", block=block,
                             ticks=np.arange(1 - size, size)))
    return panels


def _panel(vectors, axis, table, block=None, ticks=None):
    ticks = np.arange(len(vectors)) if ticks is None else ticks
    return SimilarityMatrix(cosine_similarity(vectors), ticks, axis, table, block)


def get_backbone(model):
    """The `ASTBackbone` of an `ASTClassifier` (or the backbone itself)."""
    if isinstance(model, ASTBackbone):
        return model
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, ASTBackbone):
        return backbone
    raise TypeError("Expected an ASTClassifier or an ASTBackbone (e.g. from "
                    f"keras_astpe.build_model). Received: {type(model).__name__}")


def _relative_biases(backbone):
    return [block.attention.position_bias for block in backbone.blocks
            if isinstance(block.attention.position_bias, LearnedRelativeBias)]



def _check_block(block, num_blocks):
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)):
        raise TypeError(f"`block` must be an integer. Received: {block!r}")
    if not -num_blocks <= block < num_blocks:
        raise ValueError(f"`block` must be in [0, {num_blocks}) (or negative, counting from "
                         f"the last block). Received: block={block}")
    return int(block) % num_blocks


def position_similarities(model, block=None):
    """All the Figure 3 matrices of a model, as `SimilarityMatrix`es.

    Args:
        model: an `ASTClassifier` or `ASTBackbone`.
        block: for `learned_relative`, the only encoder block to analyse (negative values
            count from the last); None for every block. Must be None for the other
            encodings, whose position table is not per block.

    Returns:
        `absolute`, `conditional_absolute`: `[time, frequency]` of the absolute table.
        `time_alibi`: `[frequency]` of its per-band table. `learned_relative`:
        `[time, frequency]` per block, blocks in order. (An encoding with both kinds of
        table would give the absolute panels first.)

    Raises:
        ValueError: the encoding (`none`, `alibi_2d`, `conditional`) has no learned position
            table, or `block` is out of range or given for a non-relative encoding.
    """
    backbone = get_backbone(model)
    pe = get_position_encoding(backbone.position_encoding)
    if not pe.learned_tables:
        plottable = [kind for kind in PE_KINDS if get_position_encoding(kind).learned_tables]
        raise ValueError(f"position_encoding {pe.name!r} has no position embeddings to plot: "
                         f"{pe.no_table_reason}. Figure 3 applies to "
                         f"{', '.join(repr(kind) for kind in plottable)}.")
    if block is not None and "relative" not in pe.learned_tables:
        raise ValueError(f"`block` selects a learned_relative block, but position_encoding "
                         f"{pe.name!r} has one position table for the whole model. Received: "
                         f"block={block}")
    panels = []
    if "absolute" in pe.learned_tables:
        panels += absolute_similarity(_to_numpy(backbone.position_embedding.embeddings))
    if "relative" in pe.learned_tables:
        biases = _relative_biases(backbone)
        indices = range(len(biases)) if block is None else [_check_block(block, len(biases))]
        for index in indices:
            bias = biases[index]
            panels += relative_similarity(_to_numpy(bias.time_embeddings),
                                          _to_numpy(bias.freq_embeddings),
                                          block=index)
    return panels


def _to_numpy(variable):
    return np.asarray(keras.ops.convert_to_numpy(variable.value), dtype=np.float64)


# === Figures ===


def plot_position_similarities(model, output_dir, block=None, model_name=None):
    """Writes the Figure 3 PNGs of `model` into `output_dir`; returns their paths.

    - `absolute`, `conditional_absolute`, `time_alibi`: `position_similarity_absolute.png`,
      time and frequency panels side by side (frequency only for `time_alibi`).
    - `learned_relative`: `position_similarity_block_<ii>.png` (`E^t` and `E^f` side by
      side) for each block (only `block` when given) and, when there are several blocks,
      `position_similarity_time_all_blocks.png` and
      `position_similarity_frequency_all_blocks.png`, one panel per block, to compare them.

    Args:
        model: an `ASTClassifier` or `ASTBackbone`.
        output_dir: folder for the PNGs (created).
        block: see `position_similarities`.
        model_name: shown in the titles (e.g. the model file name); default: none.

    Raises:
        ValueError: as `position_similarities`.
    """
    backbone = get_backbone(model)
    panels = position_similarities(backbone, block=block)
    os.makedirs(output_dir, exist_ok=True)
    pe = get_position_encoding(backbone.position_encoding)
    heading = f"{model_name} \N{EM DASH} {pe.name}" if model_name else pe.name
    paths = []
    absolute = [panel for panel in panels if panel.table == "absolute"]
    if absolute:
        shape = " x ".join(str(size) for size in backbone.position_embedding.embeddings.shape)
        if pe.absolute_table == "frequency":
            title = [f"{heading}: frequency position embeddings ({shape})",
                     "cosine similarity between bands"
                     + (" (time positions come from ALiBi)" if pe.attention_bias.startswith(
                         "alibi") else "")]
        else:
            title = [f"{heading}: absolute position embeddings ({shape})",
                     "cosine similarity of the embeddings concatenated per time chunk / "
                     "per frequency band"]
        if pe.peg:
            title.append("(the PEG's input-dependent encodings are not shown)")
        path = os.path.join(output_dir, "position_similarity_absolute.png")
        paths.append(_plot_grid(absolute, title, path, num_cols=len(absolute)))

    relative = [panel for panel in panels if panel.table == "relative"]
    num_blocks = backbone.num_layers
    head_dim = backbone.hidden_dim // backbone.num_heads
    pairs = [relative[i:i + 2] for i in range(0, len(relative), 2)]
    for time_panel, freq_panel in pairs:
        index = time_panel.block
        title = [f"{heading}: block {index} (of blocks 0-{num_blocks - 1})",
                 f"cosine similarity of the rows of $E^t$ ({len(time_panel.ticks)} x "
                 f"{head_dim}) and of $E^f$ ({len(freq_panel.ticks)} x {head_dim})"]
        path = os.path.join(output_dir, f"position_similarity_block_{index:02d}.png")
        paths.append(_plot_grid([time_panel, freq_panel], title, path, num_cols=2))
    if len(pairs) > 1:
        for axis, symbol in (("time", "t"), ("frequency", "f")):
            title = [f"{heading}: $E^{symbol}$ of each of the {num_blocks} blocks",
                     f"cosine similarity of the rows ({axis} distances)"]
            grid = [panel for panel in relative if panel.axis == axis]
            path = os.path.join(output_dir, f"position_similarity_{axis}_all_blocks.png")
            paths.append(_plot_grid(grid, title, path, num_cols=min(4, len(grid)),
                                    compact=True))
    return paths


def _plot_grid(panels, title_lines, path, num_cols, compact=False):
    """Similarity panels on a grid of `num_cols` columns, with one shared colorbar."""
    num_rows = -(-len(panels) // num_cols)
    size = 3.0 if compact else 4.6
    width = max(size * num_cols + 1.2, 7.0)
    title = "\n".join(textwrap.fill(line, width=int(width * 13)) for line in title_lines)
    figure = Figure(figsize=(width, size * num_rows + 0.5 + 0.2 * title.count("\n")),
                    layout="constrained")
    FigureCanvasAgg(figure)
    figure.suptitle(title, fontsize=11)
    axes = figure.subplots(num_rows, num_cols, squeeze=False)
    for index, panel in enumerate(panels):
        row, col = divmod(index, num_cols)
        last_row = index + num_cols >= len(panels)
        image = _draw_panel(axes[row, col], panel, compact, y_label=col == 0 or not compact,
                            x_label=last_row or not compact)
    for ax in axes.ravel()[len(panels):]:
        ax.set_visible(False)
    figure.colorbar(image, ax=axes, shrink=0.9 if num_rows == 1 else 0.6,
                    label="cosine similarity")
    figure.savefig(path, dpi=100)
    return path


def _draw_panel(ax, panel, compact, y_label, x_label):
    n = len(panel.ticks)
    image = ax.imshow(panel.matrix, cmap=_COLORMAP, vmin=-1.0, vmax=1.0,
                      interpolation="nearest")
    positions = _tick_indices(panel.ticks, label_all=8 if compact else 16,
                              max_ticks=7 if compact else 11)
    relative = panel.table == "relative"
    labels = [f"{panel.ticks[i]:+d}" if relative and panel.ticks[i] else str(panel.ticks[i])
              for i in positions]
    fontsize = 7 if compact else 8
    ax.set_xticks(positions, labels, fontsize=fontsize)
    ax.set_yticks(positions, labels, fontsize=fontsize)
    symbol = _AXIS_SYMBOL[panel.axis]
    if relative:
        label = f"$\\Delta {symbol} = {symbol}_\\mathrm{{key}} - {symbol}_\\mathrm{{query}}$"
        heading = (f"block {panel.block}: $E^{symbol}$" if compact else
                   f"$E^{symbol}$: {panel.axis} distance ($\\Delta {symbol}$ < 0: key "
                   f"{'in the past' if panel.axis == 'time' else 'in a lower band'})")
    else:
        unit = "time chunk" if panel.axis == "time" else "frequency band"
        label = f"{unit} ${symbol}$"
        heading = f"similarity in {panel.axis} ({n} {unit}s)"
    ax.set_title(heading, fontsize=9 if compact else 10)
    if y_label:
        ax.set_ylabel(label, fontsize=fontsize + 1)
    if x_label:
        ax.set_xlabel(label, fontsize=fontsize + 1)
    if n <= 10 and not compact:
        for i in range(n):
            for j in range(n):
                value = panel.matrix[i, j]
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if abs(value) > 0.6 else "black")
    return image


def _tick_indices(ticks, label_all, max_ticks):
    """Indices of the ticks to label: all of up to `label_all`, else round multiples."""
    n = len(ticks)
    if n <= label_all:
        return list(range(n))
    for step in (2, 5, 10, 20, 50, 100, 200, 500, 1000):
        chosen = [i for i in range(n) if ticks[i] % step == 0]
        if len(chosen) <= max_ticks:
            return chosen
    return [0, n - 1]
