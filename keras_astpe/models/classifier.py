"""Audio tagger / classifier: an `ASTBackbone` with a dense layer on the [CLS] state."""

import keras
from keras import ops

from keras_astpe.models.functional import FunctionalModel


@keras.saving.register_keras_serializable(package="keras_astpe")
class ASTClassifier(FunctionalModel):
    """Log-mel features -> class scores from the final [CLS] state.

    `activation="sigmoid"` for multi-label tagging (AudioSet, 527 classes),
    `"softmax"` for single-label classification (ESC-50, 50 classes). The activation runs
    in float32 under mixed precision. `activation=None` returns logits.

    The model takes features; its `audio_converter` (saved with it) turns a waveform into
    them, and `class_names` name its outputs, so that a loaded model scores raw audio
    (`keras_astpe.tag`) and exports to TF Serving with nothing beside it.

    Args:
        backbone: an `ASTBackbone`.
        num_classes: number of output classes.
        activation: output activation.
        audio_converter: the front end the model was trained with (e.g. a
            `LogMelAudioConverter` holding the training set's statistics), or None.
        class_names: names of the outputs, or None.
    """

    def __init__(self, backbone, num_classes, activation="sigmoid", audio_converter=None,
                 class_names=None, **kwargs):
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes.")
        if audio_converter is not None and audio_converter.num_mel_bins != backbone.num_mel_bins:
            raise ValueError(f"The audio converter makes {audio_converter.num_mel_bins} mel "
                             f"bins, the backbone takes {backbone.num_mel_bins}.")
        self.backbone = backbone
        self.audio_converter = audio_converter
        self.head = keras.layers.Dense(num_classes, dtype=backbone.dtype_policy, name="head")
        self.output_activation = keras.layers.Activation(
            activation or "linear", dtype="float32", name="output_activation"
        )
        features = keras.Input(shape=(None, backbone.num_mel_bins), name="features")
        # `ops.split`, not `[:, 0]`: TensorFlow's gradient of a strided slice is slow on CPU.
        cls_state = ops.squeeze(ops.split(backbone(features), [1], axis=1)[0], axis=1)
        scores = self.output_activation(self.head(cls_state))
        super().__init__(inputs=features, outputs=scores, **kwargs)
        self.num_classes = num_classes
        self.activation = activation
        self.class_names = None if class_names is None else tuple(map(str, class_names))

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "num_classes": self.num_classes,
            "activation": self.activation,
            "audio_converter": keras.saving.serialize_keras_object(self.audio_converter),
            "class_names": None if self.class_names is None else list(self.class_names),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("backbone", "audio_converter"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
