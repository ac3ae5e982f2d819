"""(time, frequency) coordinates of the tokens of a [CLS] + patch-grid sequence."""

from keras import ops


def patch_coordinates(num_patches, freq_patches):
    """Time chunk and frequency band of each patch of a time-major grid.

    Patch `i` of `num_patches` sits at `t = i // freq_patches`, `f = i % freq_patches`.
    Returns two int32 vectors of length `num_patches`.
    """
    index = ops.arange(num_patches, dtype="int32")
    return index // freq_patches, index % freq_patches
