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

    Args:
        backbone: an `ASTBackbone`.
        num_classes: number of output classes.
        activation: output activation.
    """

    def __init__(self, backbone, num_classes, activation="sigmoid", **kwargs):
        self.backbone = backbone
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

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "num_classes": self.num_classes,
            "activation": self.activation,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)
