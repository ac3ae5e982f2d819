"""Audio tagger / classifier: an `ASTBackbone` with a dense layer on its prefix tokens."""

import contextlib

import keras

from keras_astpe.layers.class_token import PrefixPooling
from keras_astpe.models.functional import FunctionalModel

# The paper trains with Adam and gradient clipping by value 1.
CLIP_VALUE = 1.0


@keras.saving.register_keras_serializable(package="keras_astpe")
class ASTClassifier(FunctionalModel):
    """Log-mel features -> class scores from the final state of the prefix tokens.

    The head reads the [CLS] state, or the mean of the [CLS] and distillation states when
    the backbone has a distillation token (AST: `(x[:, 0] + x[:, 1]) / 2`), optionally
    through a LayerNorm (`head_norm`, AST's `mlp_head`), into a dense layer.

    `activation="sigmoid"` for multi-label tagging (AudioSet, 527 classes),
    `"softmax"` for single-label classification (ESC-50, 50 classes). The activation runs
    in float32 under mixed precision. `activation=None` returns logits.

    The model takes features; its `audio_converter` (saved with it) turns a waveform into
    them, and `class_names` name its outputs, so that a loaded model scores raw audio
    (`keras_astpe.tag`) and exports to TF Serving with nothing beside it. `pool` and
    `classify` split the head for callers that also want the embedding.

    Args:
        backbone: an `ASTBackbone`.
        num_classes: number of output classes.
        activation: output activation.
        audio_converter: the front end the model was trained with (e.g. a
            `LogMelAudioConverter` holding the training set's statistics, or AST's
            `KaldiFbankAudioConverter`), or None.
        class_names: names of the outputs, or None.
        head_norm: a LayerNorm before the dense layer (AST).
        head_norm_epsilon: its epsilon (AST: 1e-5, transformers' AST: `layer_norm_eps`).
    """

    def __init__(self, backbone, num_classes, activation="sigmoid", audio_converter=None,
                 class_names=None, head_norm=False, head_norm_epsilon=1e-5, **kwargs):
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes.")
        if audio_converter is not None and audio_converter.num_mel_bins != backbone.num_mel_bins:
            raise ValueError(f"The audio converter makes {audio_converter.num_mel_bins} mel "
                             f"bins, the backbone takes {backbone.num_mel_bins}.")
        self.backbone = backbone
        self.audio_converter = audio_converter
        self.pooling = PrefixPooling(backbone.num_prefix_tokens, dtype=backbone.dtype_policy,
                                     name="pooling")
        self.head_norm = None
        if head_norm:
            self.head_norm = keras.layers.LayerNormalization(
                epsilon=head_norm_epsilon, dtype=backbone.dtype_policy, name="head_norm")
        self.head = keras.layers.Dense(num_classes, dtype=backbone.dtype_policy, name="head")
        self.output_activation = keras.layers.Activation(
            activation or "linear", dtype="float32", name="output_activation"
        )
        features = keras.Input(shape=(None, backbone.num_mel_bins), name="features")
        scores = self.classify(self.pool(backbone(features, prefix_only=True)))
        super().__init__(inputs=features, outputs=scores, **kwargs)
        self.num_classes = num_classes
        self.activation = activation
        self.class_names = None if class_names is None else tuple(map(str, class_names))
        self.head_norm_epsilon = float(head_norm_epsilon)

    def pool(self, states):
        """Backbone states `[batch, tokens, dim]` (all, or the prefix tokens' of
        `backbone(features, prefix_only=True)`) -> the embedding `[batch, dim]` the head
        reads: the mean of the prefix tokens' states ([CLS] alone in the study's models)."""
        return self.pooling(states)

    def classify(self, embedding):
        """The embedding of `pool` -> class scores (head LayerNorm, dense, activation)."""
        if self.head_norm is not None:
            embedding = self.head_norm(embedding)
        return self.output_activation(self.head(embedding))

    @property
    def multi_label(self):
        """Whether the classes are independent (sigmoid, or logits), not exclusive (softmax)."""
        return self.activation != "softmax"

    def compile(self, optimizer="auto", loss="auto", *, metrics="auto", learning_rate=5e-4,
                **kwargs):
        """`keras.Model.compile` with the task's defaults for each `"auto"` argument.

        `optimizer`: Adam at `learning_rate` (a float or a schedule) with the paper's
        gradient clipping by value `CLIP_VALUE`. `loss`: binary cross-entropy for
        multi-label tagging (sigmoid), categorical for single-label classification
        (softmax), from logits without an activation. `metrics`: per-class PR and ROC AUC
        (`mAP`, `AUC`) multi-label, `accuracy` single-label.
        """
        if optimizer == "auto":
            optimizer = keras.optimizers.Adam(learning_rate, clipvalue=CLIP_VALUE)
        super().compile(optimizer=optimizer,
                        loss=self.default_loss() if loss == "auto" else loss,
                        metrics=self.default_metrics() if metrics == "auto" else metrics,
                        **kwargs)

    def compile_from_config(self, config):
        """Compiles a loaded model as it was saved (a model saved after `compile`)."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def default_loss(self):
        """The loss `compile` uses by default (a new object)."""
        from_logits = self.activation is None
        if self.multi_label:
            return keras.losses.BinaryCrossentropy(from_logits=from_logits)
        return keras.losses.CategoricalCrossentropy(from_logits=from_logits)

    def default_metrics(self):
        """The metrics `compile` uses by default (new objects)."""
        if self.multi_label:
            from_logits = self.activation is None
            return [keras.metrics.AUC(curve="PR", multi_label=True,
                                      num_labels=self.num_classes, from_logits=from_logits,
                                      name="mAP"),
                    keras.metrics.AUC(curve="ROC", multi_label=True,
                                      num_labels=self.num_classes, from_logits=from_logits,
                                      name="AUC")]
        return [keras.metrics.CategoricalAccuracy(name="accuracy")]

    def predict(self, *args, **kwargs):
        with _variables_kept_on_error(self):
            return super().predict(*args, **kwargs)

    def evaluate(self, *args, **kwargs):
        with _variables_kept_on_error(self):
            return super().evaluate(*args, **kwargs)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "num_classes": self.num_classes,
            "activation": self.activation,
            "audio_converter": keras.saving.serialize_keras_object(self.audio_converter),
            "class_names": None if self.class_names is None else list(self.class_names),
            "head_norm": self.head_norm is not None,
            "head_norm_epsilon": self.head_norm_epsilon,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("backbone", "audio_converter"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


@contextlib.contextmanager
def _variables_kept_on_error(model):
    """Keeps `model` usable when `predict` or `evaluate` fails on JAX.

    Keras' JAX trainer detaches the variables' values while it runs its stateless
    function and attaches them again at the end; an exception in between (e.g. the "Too
    few frames" error of a clip shorter than one patch) would leave every variable empty,
    and each later call would fail with "'NoneType' object is not callable". On an error
    the values held before the call are put back, then the error goes on.
    """
    if keras.backend.backend() != "jax":
        yield
        return
    values = [(variable, variable._value) for variable in model.variables]
    try:
        yield
    except BaseException:
        for variable, value in values:
            if variable._value is None:
                variable._value = value
        model._jax_state = None
        raise
