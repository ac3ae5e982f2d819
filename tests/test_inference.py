"""keras_astpe.inference: `tag` on files and waveforms on every backend, features equal to the
training pipeline's, sliding windows by default past the trained length, in batches, and
`attach_audio_converter` for models saved without a front end."""

import io
import json
import re

import keras
import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from keras_astpe.data import audio_io, pipeline, schema
from keras_astpe.frontend import FrontEndConfig
from keras_astpe.inference import (
    ProgressBar,
    Windows,
    WindowSettings,
    attach_audio_converter,
    clip_scores,
    minimum_samples,
    read_class_names,
    score_clip,
    sliding_window_starts,
    tag,
    trained_samples,
)
from keras_astpe.models.audio_converter import LogMelAudioConverter
from keras_astpe.models.classifier import ASTClassifier
from tests.taggers import CLASSES, STATS, noise, tagger

RATE = 16000


def _reference(model, waveform):
    """The model's scores of a 16 kHz waveform, from features computed separately."""
    features = model.audio_converter.features(tf.constant(waveform[None]))
    return keras.ops.convert_to_numpy(model(features.numpy(), training=False))[0]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tagger saved to and loaded from a .keras file (the user's path)."""
    path = tmp_path_factory.mktemp("model") / "model.keras"
    tagger().save(path)
    return keras.saving.load_model(path)


def test_loaded_model_tags_a_file_in_three_lines(saved, tmp_path):
    waveform = noise(3 * 44100, seed=1)
    path = tmp_path / "clip.wav"
    sf.write(path, np.stack([waveform, 0.5 * waveform], axis=1), 44100, subtype="PCM_16")
    result = tag(saved, str(path))
    assert [name for name, _ in result] == sorted(
        CLASSES, key=lambda name: -dict(result)[name])
    assert sorted(name for name, _ in result) == sorted(CLASSES)
    expected = _reference(saved, audio_io.load_audio(path).waveform)
    np.testing.assert_allclose([dict(result)[name] for name in CLASSES], expected, atol=1e-6)
    assert tag(saved, path, top_k=1) == result[:1]


def test_waveform_at_another_rate_is_resampled_as_files_are(saved):
    waveform = noise(2 * 22050, seed=2)
    stereo = np.stack([waveform, -waveform * 0.25], axis=1)
    result = dict(tag(saved, stereo, sample_rate=22050))
    mono = audio_io.resample(stereo.mean(axis=1, dtype=np.float32), 22050, RATE)
    np.testing.assert_allclose([result[name] for name in CLASSES], _reference(saved, mono),
                               atol=1e-6)
    pcm = np.round(waveform * 32767).astype(np.int16)
    from_pcm = dict(tag(saved, pcm, sample_rate=22050))
    as_float = audio_io.resample(pcm.astype(np.float32) / 32768, 22050, RATE)
    np.testing.assert_allclose([from_pcm[name] for name in CLASSES],
                               _reference(saved, as_float), atol=1e-6)


def test_prediction_features_are_the_training_pipelines(saved, tmp_path):
    """The converter of a loaded model computes what tf.data trains on: bit for bit on
    TensorFlow, to the FFT's rounding on the other backends."""
    waveform = noise(2 * RATE, seed=3)
    path = tmp_path / "clip.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(schema.encode_example(waveform, "clip", [0], original_sample_rate=RATE,
                                           duration=2.0))
    dataset = pipeline.make_dataset(str(path), num_classes=3, batch_size=1, training=False,
                                    clip_samples=waveform.size, converter=saved.audio_converter)
    (trained_on, _), = list(dataset)
    stored = np.round(waveform * 32767).astype(np.int16).astype(np.float32) / 32768
    predicted = keras.ops.convert_to_numpy(saved.audio_converter(stored[None]))
    if keras.backend.backend() == "tensorflow":
        np.testing.assert_array_equal(predicted, trained_on.numpy())
    else:  # the backend's FFT (docs/deviations.md, "Front ends")
        np.testing.assert_allclose(predicted, trained_on.numpy(), atol=1e-4)


def test_clips_of_any_length_from_one_patch(saved):
    minimum = minimum_samples(saved)
    assert minimum == FrontEndConfig().num_samples(32) == 5360
    assert len(tag(saved, noise(minimum), sample_rate=RATE)) == 3
    assert len(tag(saved, noise(30 * RATE), sample_rate=RATE)) == 3
    with pytest.raises(ValueError, match=r"0\.335 s is too short: the model needs at least "
                                         r"5360 samples at 16000 Hz"):
        tag(saved, noise(minimum - 1), sample_rate=RATE)


def test_a_converter_that_pads_short_clips_scores_them(saved):
    """With `min_samples`, a clip shorter than a patch is padded with zeros, not refused."""
    padding = LogMelAudioConverter(FrontEndConfig(), STATS, min_samples=158960)
    model = ASTClassifier(saved.backbone, 3, audio_converter=padding, class_names=CLASSES)
    assert minimum_samples(model) == 1
    short = noise(1000, seed=11)
    padded = np.concatenate([short, np.zeros(158960 - 1000, np.float32)])
    result = dict(tag(model, short, sample_rate=RATE))
    np.testing.assert_allclose([result[name] for name in CLASSES], _reference(model, padded),
                               atol=1e-6)


def test_trained_length_is_the_default_window(saved):
    """992 frames of 32-frame patches: 158,960 samples; a clip gives the same 31 patches up
    to 1,023 frames (164,079 samples), and is scored whole up to there."""
    assert trained_samples(saved) == (158960, 164079)
    assert FrontEndConfig().num_frames(164079) == 1023
    assert FrontEndConfig().num_frames(164080) == 1024
    assert Windows.for_model(saved) == Windows(158960, 158960, 164079, "mean", 16)
    longest = noise(164079, seed=8)  # whole, and scored as its first window is
    np.testing.assert_allclose(clip_scores(saved, longest),
                               _reference(saved, longest[:158960]), atol=1e-6)
    np.testing.assert_allclose(clip_scores(saved, longest), _reference(saved, longest),
                               atol=1e-6)


def test_long_clips_are_windows_of_the_trained_length_by_default(saved):
    waveform = noise(25 * RATE, seed=9)  # 400,000 samples: windows at 0, 158960, 241040
    starts = (0, 158960, 400000 - 158960)
    by_hand = np.stack([_reference(saved, waveform[s:s + 158960]) for s in starts])
    result = dict(tag(saved, waveform, sample_rate=RATE))
    np.testing.assert_allclose([result[name] for name in CLASSES], by_hand.mean(0),
                               atol=1e-6)
    scored = score_clip(saved, waveform, Windows.for_model(saved))
    assert scored.starts.tolist() == list(starts)
    assert scored.ends.tolist() == [s + 158960 for s in starts]
    np.testing.assert_allclose(scored.window_scores, by_hand, atol=1e-6)
    whole = dict(tag(saved, waveform, sample_rate=RATE, whole_clips=True))
    np.testing.assert_allclose([whole[name] for name in CLASSES], _reference(saved, waveform),
                               atol=1e-6)
    # The two differ by far more than the 1e-6 agreement above (a small random model's
    # scores vary little between its windows, so no larger gap is guaranteed).
    assert np.abs(by_hand.mean(0) - _reference(saved, waveform)).max() > 2e-5


def test_window_batches_do_not_change_the_scores(saved):
    """Windows go through the model `window_batch` at a time: 7 windows in batches of 1, 3
    (3 + 3 + 1) and 16 give the same scores, the progress reported after each batch."""
    waveform = noise(int(4.2 * RATE), seed=10)
    results, calls = [], []
    for batch in (1, 3, 16):
        windows = Windows.for_model(saved, WindowSettings(window_seconds=1.0, hop_seconds=0.5,
                                                          window_batch=batch))
        scored = score_clip(saved, waveform, windows,
                            lambda done, total, b=batch: calls.append((b, done, total)))
        results.append(scored.window_scores)
    assert len(results[0]) == 8  # 0, 0.5, ..., 3.0 s and the last ending with the clip
    np.testing.assert_allclose(results[1], results[0], atol=1e-6)
    np.testing.assert_allclose(results[2], results[0], atol=1e-6)
    assert [c for c in calls if c[0] == 3] == [(3, 3, 8), (3, 6, 8), (3, 8, 8)]


def test_progress_bar_is_one_line_off_a_terminal():
    stream = io.StringIO()
    bar = ProgressBar("long.wav", stream)
    for done in (16, 32, 40):
        bar(done, 40)
    assert re.fullmatch(r"long\.wav: 40 windows in \d+\.\d s\n", stream.getvalue())
    single = io.StringIO()
    ProgressBar("short.wav", single)(3, 3)  # one batch: nothing to show
    assert single.getvalue() == ""


@pytest.mark.parametrize("as_tensor", [False, True], ids=["number", "tf_tensor"])
def test_sliding_window_starts_cover_the_clip_with_whole_windows(as_tensor):
    """The same windows for `tag` (numbers) and the TF Serving graph (tensors)."""
    def starts(num_samples, window, hop):
        if as_tensor:
            num_samples = tf.constant(num_samples)
        return np.asarray(sliding_window_starts(num_samples, window, hop)).tolist()

    assert starts(36800, 16000, 8000) == [0, 8000, 16000, 20800]
    assert starts(32000, 16000, 16000) == [0, 16000]
    assert starts(16001, 16000, 16000) == [0, 1]


def test_windows_aggregate_the_scores_of_the_windows(saved):
    waveform = noise(int(2.3 * RATE), seed=4)
    by_hand = np.stack([_reference(saved, waveform[start:start + RATE])
                        for start in (0, 8000, 16000, 20800)])
    for aggregation, expected in (("max", by_hand.max(0)), ("mean", by_hand.mean(0))):
        result = dict(tag(saved, waveform, sample_rate=RATE, window_seconds=1.0,
                          hop_seconds=0.5, aggregation=aggregation))
        np.testing.assert_allclose([result[name] for name in CLASSES], expected, atol=1e-6)
    short = noise(int(0.8 * RATE), seed=5)  # no longer than the window: scored whole
    result = dict(tag(saved, short, sample_rate=RATE, window_seconds=1.0))
    np.testing.assert_allclose([result[name] for name in CLASSES], _reference(saved, short),
                               atol=1e-6)


@pytest.mark.parametrize("settings, message", [
    ({"hop_seconds": 12.0}, r"hop_seconds must be > 0 and <= the window \(9\.935 s\)"),
    ({"window_seconds": 0.2}, r"shorter than one patch of the model: at least 0\.335 s"),
    ({"window_seconds": 1.0, "hop_seconds": 1.5}, "hop_seconds must be > 0 and <= the window"),
    ({"window_seconds": 1.0, "hop_seconds": 0.0}, "hop_seconds must be > 0"),
    ({"aggregation": "median"}, "aggregation must be one of"),
    ({"whole_clips": True, "window_seconds": 5.0}, "whole_clips scores every clip at once"),
    ({"window_batch": 0}, "window_batch must be >= 1"),
])
def test_bad_window_settings_are_clear_errors(saved, settings, message):
    with pytest.raises(ValueError, match=message):
        Windows.for_model(saved, WindowSettings(**settings))
    with pytest.raises(ValueError, match=message):
        tag(saved, noise(RATE), sample_rate=RATE, **settings)


def test_too_few_frames_is_the_same_clear_error_on_every_path(saved):
    """A batch of 0 or 10 frames: "Too few frames" from a call and from predict, every time
    (on JAX too, where a failed predict must not leave the model without its weights)."""
    expected = keras.ops.convert_to_numpy(saved(np.ones((1, 40, 64), np.float32)))
    for frames in (0, 10, 0):
        for run in (lambda x: saved(x), lambda x: saved.predict(x, verbose=0)):
            with pytest.raises(ValueError, match="Too few frames: the AST needs at least 32 "
                                                 f"frames .*got {frames}"):
                run(np.ones((2, frames, 64), np.float32))
    np.testing.assert_allclose(saved.predict(np.ones((1, 40, 64), np.float32), verbose=0),
                               expected, atol=1e-6)


def test_softmax_head_scores_sum_to_one():
    model = tagger(activation="softmax")
    scores = clip_scores(model, noise(RATE))
    assert scores.shape == (3,) and abs(scores.sum() - 1.0) < 1e-5


def test_bad_audio_is_a_clear_error(saved, tmp_path):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really a wav file")
    with pytest.raises(audio_io.AudioDecodeError, match="broken.wav"):
        tag(saved, broken)
    with pytest.raises(ValueError, match="needs its sample_rate"):
        tag(saved, noise(RATE))
    with pytest.raises(ValueError, match="NaN or Inf"):
        tag(saved, np.full(RATE, np.nan, np.float32), sample_rate=RATE)
    with pytest.raises(ValueError, match=r"expected a waveform \[samples\]"):
        tag(saved, np.zeros((2, RATE), np.float32), sample_rate=RATE)
    with pytest.raises(ValueError, match="int16 PCM"):
        tag(saved, np.zeros(RATE, np.int32), sample_rate=RATE)


def test_model_saved_without_a_front_end_says_how_to_attach_one(tmp_path):
    path = tmp_path / "old.keras"
    tagger(converter=False).save(path)
    old = keras.saving.load_model(path)
    with pytest.raises(ValueError, match=r"carries no audio converter .*"
                                         r"keras_astpe\.attach_audio_converter\("):
        tag(old, noise(RATE), sample_rate=RATE)

    STATS.save(tmp_path / "run")
    (tmp_path / "classes.csv").write_text(
        "index,category\n" + "".join(f"{i},{name}\n" for i, name in enumerate(CLASSES)))
    attached = attach_audio_converter(old, tmp_path / "run", tmp_path / "classes.csv")
    waveform = noise(RATE, seed=6)
    expected = keras.ops.convert_to_numpy(old(
        attached.audio_converter.features(tf.constant(waveform[None])).numpy()))[0]
    result = dict(tag(attached, waveform, sample_rate=RATE))
    np.testing.assert_allclose([result[name] for name in CLASSES], expected, atol=1e-6)

    attached.save(tmp_path / "new.keras")  # the converted model keeps all of it
    reloaded = keras.saving.load_model(tmp_path / "new.keras")
    assert reloaded.class_names == CLASSES
    assert reloaded.audio_converter.stats.low == STATS.low
    assert dict(tag(reloaded, waveform, sample_rate=RATE)) == pytest.approx(result, abs=1e-6)


def test_attach_checks_its_inputs(tmp_path):
    old = tagger(converter=False)
    with pytest.raises(ValueError, match="2 class names for a model of 3 classes"):
        attach_audio_converter(old, STATS, ["a", "b"])
    (tmp_path / "bad.json").write_text(json.dumps({"low": 1.0, "high": 0.0}))
    with pytest.raises(ValueError, match="need finite low < high"):
        attach_audio_converter(old, tmp_path / "bad.json")
    (tmp_path / "empty.csv").write_text("index,name\n")
    with pytest.raises(ValueError, match="expected a header row and one row per class"):
        read_class_names(tmp_path / "empty.csv")
    with pytest.raises(TypeError, match="expected a keras_astpe ASTClassifier"):
        attach_audio_converter(old.backbone, STATS)
