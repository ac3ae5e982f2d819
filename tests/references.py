"""Plain numpy references the layer tests compare against."""

import numpy as np


def softmax(x, axis=-1):
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def attention(x, wq, wk, wv, wo, bias=None):
    """softmax((QK^T + R) / sqrt(d)) V with projections `w* [dim, heads, head_dim]`."""
    q, k, v = (np.einsum("bld,dhk->blhk", x, w) for w in (wq, wk, wv))
    logits = np.einsum("bqhk,bshk->bhqs", q, k)
    if bias is not None:
        logits = logits + bias
    probs = softmax(logits / np.sqrt(q.shape[-1]))
    return np.einsum("bqhk,hkd->bqd", np.einsum("bhqs,bshk->bqhk", probs, v), wo)


def layer_norm(x, gamma, beta, eps):
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def depthwise_conv_same(grid, kernel, bias):
    """`grid [b, T, F, c]`, `kernel [k, k, c, 1]`: zero-padded depthwise correlation."""
    k = kernel.shape[0]
    pad = k // 2
    padded = np.pad(grid, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out = np.zeros_like(grid)
    for dt in range(k):
        for df in range(k):
            out += padded[:, dt:dt + grid.shape[1], df:df + grid.shape[2]] * kernel[dt, df, :, 0]
    return out + bias
