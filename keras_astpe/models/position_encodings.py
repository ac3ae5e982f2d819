"""The positional encodings of the study, each described once: what it adds to the AST.

`ASTBackbone` builds its layers from these descriptions and `keras_astpe.analysis` reads
them to know which learned tables a model has; a new kind is one entry here (plus its
layer, if it needs a new one).
"""

import dataclasses

ABSOLUTE_TABLES = ("none", "grid", "frequency")
ATTENTION_BIASES = ("none", "alibi_2d", "alibi_time", "learned_relative")


@dataclasses.dataclass(frozen=True)
class PositionEncoding:
    """How one positional encoding enters the AST.

    Attributes:
        name: the `position_encoding` argument of `ASTBackbone`.
        description: one line for users.
        absolute_table: learned embeddings added to the patch grid: `"none"`, `"grid"`
            (one per grid cell, T x F) or `"frequency"` (one per frequency band, shared
            by all time chunks); see `AbsolutePositionEmbedding`.
        attention_bias: bias added to the attention logits of every block: `"none"`,
            `"alibi_2d"` (half of the heads -m|dt|, half -m|df|), `"alibi_time"` (every
            head -m|dt|), see `ALiBiBias`; or `"learned_relative"` (tables E^t and E^f
            per block, see `LearnedRelativeBias`).
        peg: a PEG after each of the first `num_peg_layers` blocks.
        no_table_reason: why the kind has no learned position table for Figure 3 to
            plot; None for the kinds that have one.
    """

    name: str
    description: str
    absolute_table: str = "none"
    attention_bias: str = "none"
    peg: bool = False
    no_table_reason: str | None = None

    def __post_init__(self):
        if self.absolute_table not in ABSOLUTE_TABLES:
            raise ValueError(f"{self.name}: absolute_table must be one of {ABSOLUTE_TABLES}, "
                             f"got {self.absolute_table!r}.")
        if self.attention_bias not in ATTENTION_BIASES:
            raise ValueError(f"{self.name}: attention_bias must be one of {ATTENTION_BIASES}, "
                             f"got {self.attention_bias!r}.")
        if bool(self.learned_tables) == (self.no_table_reason is not None):
            raise ValueError(f"{self.name}: no_table_reason is needed exactly when the kind "
                             "has no learned position table.")

    @property
    def learned_tables(self):
        """The learned position tables Figure 3 can plot: a subset of
        `("absolute", "relative")` (the absolute table, the per-block relative tables)."""
        return (("absolute",) if self.absolute_table != "none" else ()) + (
            ("relative",) if self.attention_bias == "learned_relative" else ())


_NO_POSITION = "the model has no positional information"

# The seven rows of Table 1 of the paper, in its order.
POSITION_ENCODINGS = {
    pe.name: pe
    for pe in (
        PositionEncoding("none", "no position information", no_table_reason=_NO_POSITION),
        PositionEncoding("absolute", "learned embedding per grid cell, added to the patches",
                         absolute_table="grid"),
        PositionEncoding("alibi_2d", "fixed bias: half the heads -m|dt|, half -m|df|",
                         attention_bias="alibi_2d",
                         no_table_reason="ALiBi biases are fixed functions of the time and "
                                         "frequency distances"),
        PositionEncoding("time_alibi", "-m|dt| in every head + learned embedding per "
                         "frequency band", absolute_table="frequency",
                         attention_bias="alibi_time"),
        PositionEncoding("learned_relative", "R_ij = Q_i.E^t[dt] + Q_i.E^f[df], tables per "
                         "block shared by heads", attention_bias="learned_relative"),
        PositionEncoding("conditional", "PEG (3x3 depthwise conv on the grid) after each of "
                         "the first blocks", peg=True,
                         no_table_reason="the PEG computes position embeddings from the "
                                         "input itself"),
        PositionEncoding("conditional_absolute", "PEG and learned absolute embeddings",
                         absolute_table="grid", peg=True),
    )
}
PE_KINDS = tuple(POSITION_ENCODINGS)


def get_position_encoding(name):
    """The `PositionEncoding` called `name`; a clear error for an unknown one."""
    if name not in POSITION_ENCODINGS:
        raise ValueError(f"Unknown position_encoding {name!r}; expected one of {PE_KINDS}.")
    return POSITION_ENCODINGS[name]
