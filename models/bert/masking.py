"""BERT's masking of token ids for masked-language-model pretraining (Devlin et al., 2018).

Of each text's known words (not padding, not the out-of-vocabulary id), `mask_rate` are chosen
to be predicted (at most `predictions` positions); of the chosen, 80 % are replaced by the mask
token, 10 % by a random token and 10 % kept, so the encoder cannot learn that only masked
positions matter.
"""

from __future__ import annotations

import tensorflow as tf


def mask_tokens(
    token_ids: tf.Tensor,
    predictions: int,
    mask_rate: float,
    mask_id: int,
    vocabulary: int,
    seed: tf.Tensor,
) -> tuple[dict[str, tf.Tensor], tf.Tensor, tf.Tensor]:
    """Return ({token_ids: masked ids (B, T), positions (B, P)}, targets (B, P), weights (B, P)).

    `seed` is a stateless seed (shape (2,), int): the same batch and seed mask the same way.
    Weights are 1 on chosen positions and 0 on the slack of short texts. Only known words are
    chosen: the out-of-vocabulary id (1) stays an input, never a target. Random replacements
    are drawn from the ids of known words (2 .. vocabulary-1: not padding, unknown or mask).
    """
    token_ids = tf.cast(token_ids, tf.int32)
    real = token_ids > 1  # (B, T) words: not padding (0), and unknown words (1) teach nothing
    seeds = tf.random.experimental.stateless_split(seed, num=4)
    noise = tf.random.stateless_uniform(tf.shape(token_ids), seeds[0])  # (B, T)
    scores = tf.where(real, noise, -1.0)  # padding is never chosen
    _, positions = tf.math.top_k(scores, k=predictions)  # (B, P), real tokens first
    lengths = tf.reduce_sum(tf.cast(real, tf.float32), axis=1)  # (B,)
    chosen = tf.minimum(tf.math.ceil(lengths * mask_rate), predictions)  # (B,)
    slots = tf.range(predictions, dtype=tf.float32)[tf.newaxis, :]  # (1, P)
    weights = tf.cast(slots < chosen[:, tf.newaxis], tf.float32)  # (B, P)
    targets = tf.gather(token_ids, positions, batch_dims=1)  # (B, P)

    roll = tf.random.stateless_uniform(tf.shape(positions), seeds[1])  # (B, P)
    random_ids = tf.random.stateless_uniform(
        tf.shape(positions), seeds[2], minval=2, maxval=max(vocabulary, 3), dtype=tf.int32
    )
    replacement = tf.where(roll < 0.8, mask_id, tf.where(roll < 0.9, random_ids, targets))
    replacement = tf.where(weights > 0, replacement, targets)  # slack positions unchanged
    batch = tf.shape(token_ids)[0]
    rows = tf.tile(tf.range(batch)[:, tf.newaxis], [1, predictions])  # (B, P)
    indices = tf.stack([rows, positions], axis=-1)  # (B, P, 2)
    masked = tf.tensor_scatter_nd_update(token_ids, indices, replacement)
    return {"token_ids": masked, "positions": positions}, targets, weights
