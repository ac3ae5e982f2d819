"""The TF Serving export: layout, both signatures against the Keras model (in a fresh process
without keras_astpe, and with saved_model_cli), features equal to the training pipeline's,
sliding windows (by default past the trained length, in batches), every PE kind, bad
requests, the request limits, and exports of models trained on each backend."""

import io
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from keras_astpe import PE_KINDS, build_model
from keras_astpe.data import audio_io, pipeline, schema
from keras_astpe.inference import Windows, WindowSettings, clip_scores, tag
from keras_astpe.serving import export_saved_model
from keras_astpe.serving.saved_model import ServingLimits, serving_module
from tests.taggers import CLASSES, noise, tagger

RATE = 16000
TOLERANCE = 1e-4  # the bound between the export and the Keras model
agnostic = pytest.mark.backend_agnostic


def _wav(path, seconds, rate, channels, subtype, seed):
    samples = np.stack([noise(int(seconds * rate), seed + c) for c in range(channels)], 1)
    sf.write(path, samples, rate, subtype=subtype)
    return str(path)


def _keras_scores(model, waveforms, windows=None):
    """`clip_scores` of each waveform: the model's default windows, or `windows`."""
    return np.stack([clip_scores(model, waveform, windows) for waveform in waveforms])


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """WAV files of several rates, channel counts, encodings and lengths."""
    folder = tmp_path_factory.mktemp("clips")
    return {
        "cd": _wav(folder / "cd.wav", 3.0, 44100, 2, "PCM_16", seed=1),
        "float": _wav(folder / "float.wav", 2.0, 16000, 1, "FLOAT", seed=3),
        "phone": _wav(folder / "phone.wav", 1.0, 8000, 1, "PCM_16", seed=4),
        "long": _wav(folder / "long.wav", 25.0, 22050, 1, "PCM_16", seed=5),
    }


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """`(keras model, export dir, loaded export)`: one export for the module's tests."""
    folder = tmp_path_factory.mktemp("export")
    tagger().save(folder / "model.keras")
    model = keras.saving.load_model(folder / "model.keras")
    export_dir = export_saved_model(model, folder / "serving" / "tiny" / "1")
    return model, export_dir, tf.saved_model.load(export_dir)


@agnostic
def test_tf_serving_layout_with_class_names(exported):
    _, export_dir, _ = exported
    assert export_dir.endswith(os.path.join("serving", "tiny", "1"))
    assert {"saved_model.pb", "variables", "assets"} <= set(os.listdir(export_dir))
    with open(os.path.join(export_dir, "assets", "class_names.txt")) as f:
        assert f.read().splitlines() == list(CLASSES)
    assert not [name for name in os.listdir(os.path.dirname(export_dir))
                if name.startswith(".tmp")]


@agnostic
def test_waveforms_score_as_the_keras_model(exported):
    model, _, loaded = exported
    serve = loaded.signatures["serving_default"]
    for seconds in (1, 60):  # whole; 60 s: 7 windows of 158,960 samples
        waveforms = np.stack([noise(seconds * RATE, seed=s) for s in range(2)])
        outputs = serve(waveform=tf.constant(waveforms))
        np.testing.assert_allclose(outputs["scores"].numpy(),
                                   _keras_scores(model, waveforms), atol=TOLERANCE)
        starts = Windows.for_model(model).pieces(waveforms.shape[1])[0]
        length = min(waveforms.shape[1], 158960)
        pieces = np.stack([waveforms[:, s:s + length] for s in starts], axis=1)
        features = model.audio_converter.features(tf.constant(pieces.reshape(-1, length)))
        cls_state = model.backbone(features, training=False)[:, 0].numpy()
        np.testing.assert_allclose(outputs["embedding"].numpy(),
                                   cls_state.reshape(2, len(starts), -1).mean(axis=1),
                                   atol=1e-5)


@agnostic
def test_wav_files_score_as_the_keras_model_on_the_decoded_files(exported, clips):
    """Files of different lengths in one request, and a batch of equal lengths."""
    model, _, loaded = exported
    serve = loaded.signatures["serving_wav"]
    for names in (("cd", "float", "phone"), ("cd", "cd")):
        contents = [open(clips[name], "rb").read() for name in names]
        outputs = serve(wav_bytes=tf.constant(contents))
        expected = _keras_scores(model, [audio_io.load_audio(clips[n]).waveform for n in names])
        np.testing.assert_allclose(outputs["scores"].numpy(), expected, atol=TOLERANCE)
        assert outputs["embedding"].shape == (len(names), 64)


@agnostic
def test_serving_features_are_the_training_pipelines(exported, tmp_path):
    """Scores of the export on a clip equal the model's on the tf.data pipeline's features of
    the same clip, from a waveform and from its 16-bit WAV."""
    model, _, loaded = exported
    waveform = noise(2 * RATE, seed=7)
    path = tmp_path / "clip.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(schema.encode_example(waveform, "clip", [0], original_sample_rate=RATE,
                                           duration=2.0))
    (trained_on, _), = list(pipeline.make_dataset(
        str(path), num_classes=3, batch_size=1, training=False, clip_samples=waveform.size,
        converter=model.audio_converter))
    expected = keras.ops.convert_to_numpy(model(trained_on.numpy(), training=False))
    pcm = np.round(waveform * 32767).astype(np.int16)
    from_waveform = loaded.signatures["serving_default"](
        waveform=tf.constant(pcm[None].astype(np.float32) / 32768))["scores"].numpy()
    buffer = io.BytesIO()
    sf.write(buffer, pcm, RATE, subtype="PCM_16", format="WAV")
    from_wav = loaded.signatures["serving_wav"](
        wav_bytes=tf.constant([buffer.getvalue()]))["scores"].numpy()
    np.testing.assert_allclose(from_waveform, expected, atol=1e-6)
    np.testing.assert_allclose(from_wav, expected, atol=1e-6)


_FRESH = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    request = json.loads(sys.argv[1])
    loaded = tf.saved_model.load(request["export_dir"])
    waveform = loaded.signatures["serving_default"](
        waveform=tf.constant(np.load(request["waveforms"])))
    wav = loaded.signatures["serving_wav"](
        wav_bytes=tf.constant([open(p, "rb").read() for p in request["wavs"]]))
    assert "keras_astpe" not in sys.modules, "the export imported keras_astpe"
    np.savez(request["out"], waveform=waveform["scores"].numpy(), wav=wav["scores"].numpy())
""")


@agnostic
def test_a_fresh_process_with_tensorflow_alone_gets_the_same_scores(exported, clips, tmp_path):
    model, export_dir, _ = exported
    waveforms = np.stack([noise(3 * RATE, seed=s) for s in (11, 12)])
    np.save(tmp_path / "waveforms.npy", waveforms)
    wavs = [clips["cd"], clips["phone"], clips["long"]]
    request = {"export_dir": export_dir, "waveforms": str(tmp_path / "waveforms.npy"),
               "wavs": wavs, "out": str(tmp_path / "out.npz")}
    result = subprocess.run([sys.executable, "-c", _FRESH, json.dumps(request)],
                            capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 0, result.stderr[-3000:]
    out = np.load(tmp_path / "out.npz")
    np.testing.assert_allclose(out["waveform"], _keras_scores(model, waveforms),
                               atol=TOLERANCE)
    np.testing.assert_allclose(
        out["wav"], _keras_scores(model, [audio_io.load_audio(p).waveform for p in wavs]),
        atol=TOLERANCE)


def _saved_model_cli(export_dir, signature, inputs, outdir):
    command = ["saved_model_cli", "run", "--dir", export_dir, "--tag_set", "serve",
               "--signature_def", signature, "--inputs", inputs, "--outdir", str(outdir)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))


@agnostic
def test_saved_model_cli_runs_each_signature(exported, clips, tmp_path):
    model, export_dir, _ = exported
    waveforms = noise(2 * RATE, seed=13)[None]
    np.save(tmp_path / "waveform.npy", waveforms)
    np.save(tmp_path / "wavs.npy", np.array([open(clips["cd"], "rb").read()], dtype=object),
            allow_pickle=True)
    for signature, inputs, expected in (
            ("serving_default", f"waveform={tmp_path / 'waveform.npy'}",
             _keras_scores(model, waveforms)),
            ("serving_wav", f"wav_bytes={tmp_path / 'wavs.npy'}",
             _keras_scores(model, [audio_io.load_audio(clips["cd"]).waveform]))):
        result = _saved_model_cli(export_dir, signature, inputs, tmp_path / signature)
        assert result.returncode == 0, result.stderr[-3000:]
        np.testing.assert_allclose(np.load(tmp_path / signature / "scores.npy"), expected,
                                   atol=TOLERANCE)


@pytest.fixture(scope="module")
def windowed(tmp_path_factory):
    """An export that scores clips longer than 1 s as windows every 0.5 s, max of the scores."""
    model = tagger()
    export_dir = export_saved_model(model, tmp_path_factory.mktemp("windowed") / "1",
                                    window_seconds=1.0, hop_seconds=0.5, aggregation="max")
    return model, tf.saved_model.load(export_dir)


@agnostic
def test_windows_are_aggregated_as_computed_by_hand(windowed):
    model, loaded = windowed
    serve = loaded.signatures["serving_default"]
    waveforms = np.stack([noise(int(2.3 * RATE), seed=s) for s in (21, 22)])
    starts = (0, 8000, 16000, 20800)  # every 0.5 s, the last window ends with the clip
    windows = [[w[s:s + RATE] for s in starts] for w in waveforms]
    by_hand = np.stack([_keras_scores(model, clip_windows) for clip_windows in windows])
    embeddings = np.stack([model.backbone(model.audio_converter.features(
        tf.constant(np.stack(clip_windows))), training=False)[:, 0].numpy()
        for clip_windows in windows])
    outputs = serve(waveform=tf.constant(waveforms))
    np.testing.assert_allclose(outputs["scores"].numpy(), by_hand.max(axis=1), atol=1e-5)
    np.testing.assert_allclose(outputs["embedding"].numpy(), embeddings.mean(axis=1),
                               atol=1e-5)
    by_tag = dict(tag(model, waveforms[0], sample_rate=RATE, window_seconds=1.0,
                      hop_seconds=0.5, aggregation="max"))
    np.testing.assert_allclose([by_tag[name] for name in CLASSES],
                               outputs["scores"].numpy()[0], atol=1e-5)
    short = noise(int(0.9 * RATE), seed=23)[None]  # not longer than a window: whole
    whole = serve(waveform=tf.constant(short))["scores"].numpy()
    np.testing.assert_allclose(whole, _keras_scores(model, short), atol=1e-5)
    contents = []  # files of different lengths: each scored alone, with the same windows
    for waveform in (waveforms[0], short[0]):
        buffer = io.BytesIO()
        sf.write(buffer, waveform, RATE, subtype="FLOAT", format="WAV")
        contents.append(buffer.getvalue())
    from_wav = loaded.signatures["serving_wav"](wav_bytes=tf.constant(contents))["scores"]
    np.testing.assert_allclose(from_wav.numpy(), [outputs["scores"].numpy()[0], whole[0]],
                               atol=1e-5)


def _module(model, tmp_path, limits=None, **settings):
    """The serving graphs of `model` (not saved): windows of `settings`, default limits."""
    names = tmp_path / "names.txt"
    names.write_text("\n".join(model.class_names))
    extra = {} if limits is None else {"limits": limits}
    return serving_module(model, Windows.for_model(model, WindowSettings(**settings)),
                          str(names), **extra)


@agnostic
def test_default_export_scores_long_clips_as_windows_of_the_trained_length(exported, clips):
    """25 s: windows of 158,960 samples at 0, 158,960 and 241,040, their scores averaged, as
    `tag` does; a 10 s clip (no more patches than the trained one) is scored whole."""
    model, _, loaded = exported
    waveform = noise(25 * RATE, seed=24)
    starts = (0, 158960, 25 * RATE - 158960)
    by_hand = _keras_scores(model, [waveform[s:s + 158960] for s in starts]).mean(axis=0)
    serve = loaded.signatures["serving_default"]
    scores = serve(waveform=tf.constant(waveform[None]))["scores"].numpy()[0]
    np.testing.assert_allclose(scores, by_hand, atol=TOLERANCE)
    by_tag = dict(tag(model, waveform, sample_rate=RATE))
    np.testing.assert_allclose([by_tag[name] for name in CLASSES], scores, atol=TOLERANCE)
    ten = noise(10 * RATE, seed=25)[None]
    np.testing.assert_allclose(serve(waveform=tf.constant(ten))["scores"].numpy(),
                               _keras_scores(model, ten, Windows()), atol=TOLERANCE)
    contents = [open(clips[name], "rb").read() for name in ("long", "phone")]
    from_wav = loaded.signatures["serving_wav"](wav_bytes=tf.constant(contents))["scores"]
    expected = _keras_scores(model, [audio_io.load_audio(clips[name]).waveform
                                     for name in ("long", "phone")])
    np.testing.assert_allclose(from_wav.numpy(), expected, atol=TOLERANCE)


@agnostic
def test_window_batches_and_whole_clips(tmp_path):
    """The loop over window batches gives the scores of one batch; `whole_clips` scores a
    long clip at once, as the Keras model on the whole clip."""
    model = tagger()
    waveforms = np.stack([noise(int(4.2 * RATE), seed=s) for s in (26, 27)])  # 8 windows each
    outputs = {batch: _module(model, tmp_path, window_seconds=1.0, hop_seconds=0.5,
                              aggregation="max", window_batch=batch).serving_default(
        tf.constant(waveforms)) for batch in (3, 16)}
    np.testing.assert_allclose(outputs[3]["scores"].numpy(), outputs[16]["scores"].numpy(),
                               atol=1e-6)
    np.testing.assert_allclose(outputs[3]["embedding"].numpy(),
                               outputs[16]["embedding"].numpy(), atol=1e-5)
    long = noise(25 * RATE, seed=28)[None]
    whole = _module(model, tmp_path, whole_clips=True, window_batch=1).serving_default(
        tf.constant(np.concatenate([long, long * 0.5])))["scores"].numpy()
    np.testing.assert_allclose(whole, _keras_scores(model, [long[0], long[0] * 0.5],
                                                    Windows()), atol=1e-5)


@agnostic
def test_requests_over_the_limits_are_refused_naming_the_input_and_the_limit(tmp_path):
    module = _module(tagger(), tmp_path, limits=ServingLimits(
        max_clip_seconds=3, max_request_seconds=5, max_batch=2))
    cases = [
        (module.serving_default, np.zeros((3, RATE), np.float32),
         "waveform: a batch of 3 waveforms is over the limit of 2 per request (max_batch, set "
         "at export)"),
        (module.serving_default, np.zeros((1, int(3.5 * RATE)), np.float32),
         "waveform: waveforms of 3.5 s are over the limit of 3 s per clip (max_clip_seconds, "
         "set at export)"),
        (module.serving_default, np.zeros((2, int(2.75 * RATE)), np.float32),
         "waveform: the waveforms hold 5.5 s of audio, over the limit of 5 s per request "
         "(max_request_seconds, set at export)"),
        (module.serving_wav, np.array([_wav_bytes()] * 3, dtype=object),
         "wav_bytes: a batch of 3 files is over the limit of 2 per request (max_batch"),
        (module.serving_wav, np.array([_wav_bytes(), _wav_bytes(3.25, 44100)], dtype=object),
         "wav_bytes[1]: 3.25 s of audio is over the limit of 3 s per clip (max_clip_seconds, "
         "set at export)"),
        (module.serving_wav, np.array([_wav_bytes(2.5, 8000), _wav_bytes(2.75)], dtype=object),
         "wav_bytes: the files hold 5.25 s of audio, over the limit of 5 s per request "
         "(max_request_seconds, set at export)"),
    ]
    for function, request_input, message in cases:
        with pytest.raises(tf.errors.InvalidArgumentError) as error:
            function(tf.constant(request_input))
        assert message in error.value.message
    within = module.serving_wav(tf.constant([_wav_bytes(2.5, 8000), _wav_bytes(2.5)]))
    assert within["scores"].shape == (2, 3)
    with pytest.raises(ValueError, match="max_batch must be > 0, got 0"):
        ServingLimits(max_batch=0)


@agnostic
@pytest.mark.parametrize("pe", PE_KINDS)
def test_every_positional_encoding_serves(pe, tmp_path):
    """The serving graphs, traced for any length, score as the Keras model (no save)."""
    model = tagger(pe, activation="softmax")
    module = _module(model, tmp_path)
    waveforms = np.stack([noise(int(1.7 * RATE), seed=s) for s in (31, 32)])
    scores = module.serving_default(tf.constant(waveforms))["scores"].numpy()
    np.testing.assert_allclose(scores, _keras_scores(model, waveforms), atol=1e-5)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)


def _wav_bytes(seconds=1.0, rate=RATE, subtype="PCM_16"):
    buffer = io.BytesIO()
    sf.write(buffer, noise(int(seconds * rate)), rate, subtype=subtype, format="WAV")
    return buffer.getvalue()


def _float_wav_reaching(peak):
    samples = noise(RATE)
    samples[100] = peak
    buffer = io.BytesIO()
    sf.write(buffer, samples, RATE, subtype="FLOAT", format="WAV")
    return buffer.getvalue()


_EXPECTED_WAVEFORM = ("expected a float32 tensor [batch, samples] of mono audio at "
                      "16000 Hz")


@agnostic
@pytest.mark.parametrize("signature, request_input, message", [
    ("serving_default", noise(RATE), f"waveform: {_EXPECTED_WAVEFORM}, got shape [16000]"),
    ("serving_default", noise(RATE).reshape(1, 1, -1),
     f"waveform: {_EXPECTED_WAVEFORM}, got shape [1 1 16000]"),
    ("serving_default", np.zeros((0, RATE), np.float32),
     f"waveform: the batch is empty; {_EXPECTED_WAVEFORM}"),
    ("serving_default", np.zeros((2, 0), np.float32),
     "waveform: the waveforms are empty (0 samples)"),
    ("serving_default", noise(5359)[None],
     "waveform: 5359 samples is too short: the model needs at least 5360 samples at "
     "16000 Hz (0.335 s: one patch)"),
    ("serving_default", np.full((1, RATE), np.nan, np.float32),
     "waveform: the samples contain NaN or Inf"),
    ("serving_default", np.full((1, RATE), 1000.0, np.float32),
     "waveform: samples reach 1000; expected float samples in [-1, 1] (divide int16 PCM by "
     "32768)"),
    ("serving_default", noise(RATE)[None].astype(np.float64),
     "was expected to be a float tensor but is a double tensor"),
    ("serving_default", np.zeros((1, RATE), np.int16),
     "was expected to be a float tensor but is a int16 tensor"),
    ("serving_wav", np.array(_wav_bytes(), dtype=object),
     "wav_bytes: expected a string tensor [batch] of WAV files, got shape []"),
    ("serving_wav", np.array([], dtype=object),
     "wav_bytes: the batch is empty"),
    ("serving_wav", np.array([_wav_bytes(), b"ID3 not a wav"], dtype=object),
     "wav_bytes[1]: not a WAV file (13 bytes that do not start with a RIFF/WAVE header)"),
    ("serving_wav", np.array([_wav_bytes()[:-100]], dtype=object),
     "wav_bytes[0]: truncated WAV file: its data chunk announces 32000 bytes, 31900 are "
     "present"),
    ("serving_wav", np.array([_wav_bytes(rate=96000)], dtype=object),
     "wav_bytes[0]: a sample rate of 96000 Hz is not supported; expected one of 8000, "
     "11025, 16000, 22050, 24000, 32000, 44100, 48000 Hz"),
    ("serving_wav", np.array([_wav_bytes(subtype="PCM_24")], dtype=object),
     "wav_bytes[0]: unsupported WAV encoding (format tag 1, 24 bits per sample); expected "
     "16-bit PCM or 32-bit float"),
    ("serving_wav", np.array([_wav_bytes(), _wav_bytes(seconds=0.3, rate=44100)],
                             dtype=object),
     "wav_bytes[1]: 4800 samples at 16000 Hz after resampling is too short: the model "
     "needs at least 5360 samples at 16000 Hz (0.335 s: one patch)"),
    ("serving_wav", np.array([_wav_bytes(), _float_wav_reaching(1e30)], dtype=object),
     "wav_bytes[1]: the samples of the WAV file reach 1e+30; expected float samples in "
     "[-1, 1]"),
    ("serving_wav", np.zeros((1,), np.float32),
     "was expected to be a string tensor but is a float tensor"),
])
def test_bad_requests_say_what_was_expected(exported, signature, request_input, message):
    _, _, loaded = exported
    function = loaded.signatures[signature]
    name = "waveform" if signature == "serving_default" else "wav_bytes"
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        function(**{name: tf.constant(request_input)})
    assert message in error.value.message


@agnostic
def test_export_refuses_to_replace_a_version_or_a_model_without_front_end(exported, tmp_path):
    model, export_dir, _ = exported
    with pytest.raises(FileExistsError, match="already exists: choose another version"):
        export_saved_model(model, export_dir)
    bare = build_model("none", preset="ast-pe-tiny", num_classes=2)
    with pytest.raises(ValueError, match=r"carries no audio converter.*attach_audio_converter"):
        export_saved_model(bare, tmp_path / "1")
    with pytest.raises(ValueError, match="shorter than one patch"):
        export_saved_model(model, tmp_path / "2", window_seconds=0.1)
    with pytest.raises(ValueError, match="max_clip_seconds must be > 0, got -1"):
        export_saved_model(model, tmp_path / "3", max_clip_seconds=-1)
    with pytest.raises(TypeError, match=r"unknown export settings \['window'\]"):
        export_saved_model(model, tmp_path / "4", window=5)
    assert not os.listdir(tmp_path)


@pytest.mark.slow
def test_model_trained_on_this_backend_exports_its_scores(tmp_path):
    """One training step on the current backend, save, export over the untrained model's
    export (in a TensorFlow subprocess off TensorFlow), and the export scores as the trained
    model."""
    model = tagger()
    waveforms = np.stack([noise(int(1.5 * RATE), seed=s) for s in (41, 42)])
    before = _keras_scores(model, waveforms)
    export_dir = export_saved_model(model, tmp_path / "serving" / "1")  # replaced below
    features = keras.ops.convert_to_numpy(model.audio_converter(waveforms))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
    model.fit(features, np.array([[1, 0, 0], [0, 1, 1]], np.float32), epochs=1,
              batch_size=2, verbose=0)
    trained = _keras_scores(model, waveforms)
    assert np.abs(trained - before).max() > 10 * TOLERANCE  # the step changed the model
    model.save(tmp_path / "model.keras")
    assert export_saved_model(model, export_dir, overwrite=True, max_batch=2) == export_dir
    loaded = tf.saved_model.load(export_dir)
    scores = loaded.signatures["serving_default"](waveform=tf.constant(waveforms))["scores"]
    np.testing.assert_allclose(scores.numpy(), trained, atol=TOLERANCE)
    with pytest.raises(tf.errors.InvalidArgumentError, match="over the limit of 2 per request"):
        loaded.signatures["serving_default"](waveform=tf.constant(waveforms[[0, 1, 0]]))
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(_keras_scores(reloaded, waveforms), trained, atol=1e-6)
