"""The ONNX and LiteRT exports against the Keras model: every PE kind and both front ends at
three clip lengths, in ONNX Runtime and LiteRT's interpreter; a fixed length; the class
names they carry; bad requests; exports from JAX and PyTorch."""

import json

import keras
import numpy as np
import onnxruntime
import pytest
from ai_edge_litert.interpreter import Interpreter

from keras_astpe import PE_KINDS, build_model
from keras_astpe.kaldi_fbank import KaldiFbankConfig
from keras_astpe.models import ASTClassifier, KaldiFbankAudioConverter
from keras_astpe.serving import export, export_litert, export_onnx
from keras_astpe.serving.portable import class_names_path
from tests.taggers import CLASSES, noise, tagger

RATE = 16000
TOLERANCE = 1e-4  # the bound between the exports and the Keras model
SECONDS = (0.5, 3.3, 12.0)  # a short clip, one between, past the trained 10 s
agnostic = pytest.mark.backend_agnostic


def _keras_outputs(model, waveforms):
    """Scores and embedding of each clip whole, by the Keras model."""
    embedding = model.pool(model.backbone(model.audio_converter(waveforms)))
    return {"scores": keras.ops.convert_to_numpy(model.classify(embedding)),
            "embedding": keras.ops.convert_to_numpy(embedding)}


def _onnx(path):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]

    def run(waveforms):
        return dict(zip(names, session.run(None, {"waveform": waveforms}), strict=True))

    return run, session


def _litert(path):
    return Interpreter(model_path=str(path)).get_signature_runner()


def _batch(seconds, seed=0):
    return np.stack([noise(int(seconds * RATE), seed=seed + i) for i in range(2)])


def _kaldi_tagger():
    """An AST-style tiny classifier on AST's front end (kaldi fbank, clips kept whole)."""
    bare = build_model("none", preset="ast-pe-tiny", num_classes=3, num_mel_bins=128)
    converter = KaldiFbankAudioConverter(KaldiFbankConfig(target_frames=None))
    return ASTClassifier(bare.backbone, 3, audio_converter=converter, class_names=CLASSES)


@agnostic
@pytest.mark.parametrize("pe", [*PE_KINDS, "kaldi_fbank"])
def test_onnx_and_litert_give_the_keras_scores_at_any_length(pe, tmp_path):
    model = _kaldi_tagger() if pe == "kaldi_fbank" else tagger(pe)
    run_onnx, _ = _onnx(export_onnx(model, tmp_path / "tagger.onnx"))
    run_litert = _litert(export_litert(model, tmp_path / "tagger.tflite"))
    for seconds in SECONDS:
        waveforms = _batch(seconds)
        expected = _keras_outputs(model, waveforms)
        for name, outputs in (("onnx", run_onnx(waveforms)),
                              ("litert", run_litert(waveform=waveforms))):
            for key in ("scores", "embedding"):
                np.testing.assert_allclose(outputs[key], expected[key], atol=TOLERANCE,
                                           err_msg=f"{name} {key} at {seconds} s")


@agnostic
def test_the_files_carry_the_class_names_and_the_sample_rate(tmp_path):
    model = tagger()
    _, session = _onnx(export(model, tmp_path / "t.onnx", format="onnx"))
    metadata = session.get_modelmeta().custom_metadata_map
    assert json.loads(metadata["class_names"]) == list(CLASSES)
    assert metadata["sample_rate"] == "16000"
    assert [i.name for i in session.get_inputs()] == ["waveform"]
    assert sorted(o.name for o in session.get_outputs()) == ["embedding", "scores"]
    path = export(model, tmp_path / "t.tflite", format="litert")
    with open(class_names_path(path), encoding="utf-8") as f:
        assert f.read().splitlines() == list(CLASSES)


@agnostic
def test_a_fixed_length_takes_that_length_only(tmp_path):
    model = tagger()
    run_onnx, session = _onnx(export_onnx(model, tmp_path / "t.onnx", seconds=2.0))
    assert session.get_inputs()[0].shape[1] == 2 * RATE
    interpreter = Interpreter(model_path=export_litert(model, tmp_path / "t.tflite",
                                                       seconds=2.0))
    assert list(interpreter.get_input_details()[0]["shape_signature"]) == [-1, 2 * RATE]
    waveforms = _batch(2.0)
    expected = _keras_outputs(model, waveforms)["scores"]
    np.testing.assert_allclose(run_onnx(waveforms)["scores"], expected, atol=TOLERANCE)
    np.testing.assert_allclose(
        interpreter.get_signature_runner()(waveform=waveforms)["scores"], expected,
        atol=TOLERANCE)
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        run_onnx(_batch(3.0))


@agnostic
def test_bad_settings_are_refused_before_any_work(tmp_path):
    model = tagger()
    with pytest.raises(ValueError, match=r"t\.tflite: the file name must end with \.onnx"):
        export_onnx(model, tmp_path / "t.tflite")
    with pytest.raises(ValueError, match=r"seconds=0\.1 is shorter than one patch of the "
                                         r"model: at least 0\.335 s"):
        export_litert(model, tmp_path / "t.tflite", seconds=0.1)
    with pytest.raises(ValueError, match="format must be one of"):
        export(model, tmp_path / "t.onnx", format="torchscript")
    (tmp_path / "old.onnx").write_bytes(b"old")
    with pytest.raises(FileExistsError, match=r"old\.onnx already exists"):
        export_onnx(model, tmp_path / "old.onnx")
    assert (tmp_path / "old.onnx").read_bytes() == b"old"
    with pytest.raises(FileNotFoundError, match=r"missing\.keras: model file not found"):
        export_onnx(str(tmp_path / "missing.keras"), tmp_path / "new.onnx")


def test_exports_from_any_backend(tmp_path):
    """From JAX or PyTorch the export runs under TensorFlow in a child process; the file
    gives the scores of the model as this backend computes them."""
    if keras.backend.backend() == "tensorflow":
        pytest.skip("the other backends' path")
    model = tagger("learned_relative")
    run_onnx, _ = _onnx(export_onnx(model, tmp_path / "t.onnx"))
    waveforms = _batch(1.5)
    np.testing.assert_allclose(run_onnx(waveforms)["scores"],
                               _keras_outputs(model, waveforms)["scores"], atol=TOLERANCE)
    with pytest.raises(FileExistsError, match="already exists"):
        export_onnx(model, tmp_path / "t.onnx")
