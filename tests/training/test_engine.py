"""The training engine: fine-tuning heads, the validation split, front-end settings, and a
short run on your own data that ends with its best validation checkpoint."""

import csv
import json
import types

import keras
import numpy as np
import pytest

import keras_astpe
from keras_astpe.data.dataset_info import DatasetInfo, SplitInfo
from keras_astpe.kaldi_fbank import KaldiFbankConfig
from keras_astpe.models.audio_converter import KaldiFbankAudioConverter
from keras_astpe.training import engine
from keras_astpe.training.own_data import OwnDataConfig, clip_frames, train_own_data
from tests import sounds
from tests.taggers import CLASSES, tagger
from tfrecords_tools.folder import convert_folder


def _info(multi_label=False, class_names=CLASSES):
    return types.SimpleNamespace(class_names=class_names, num_classes=len(class_names),
                                 multi_label=multi_label)


def _head(model):
    return [np.array(w) for w in model.head.get_weights()]


def test_fine_tuning_keeps_the_head_of_the_same_classes_and_replaces_another():
    pretrained = tagger(activation="softmax")
    backbone = [np.array(w) for w in pretrained.backbone.get_weights()]

    same = engine.fine_tuning_classifier(pretrained, _info(), pretrained.audio_converter)
    for a, b in zip(_head(same), _head(pretrained), strict=True):
        np.testing.assert_array_equal(a, b)
    assert same.class_names == CLASSES and same.backbone is not pretrained.backbone

    for info in (_info(class_names=("a", "b", "c", "d")),  # other classes
                 _info(multi_label=True)):  # the same ones, multi-label now
        model = engine.fine_tuning_classifier(pretrained, info, pretrained.audio_converter)
        assert model.class_names == info.class_names
        assert model.activation == ("sigmoid" if info.multi_label else "softmax")
        kernel = _head(model)[0]
        assert kernel.shape == (64, len(info.class_names))
        if kernel.shape == _head(pretrained)[0].shape:
            assert not np.allclose(kernel, _head(pretrained)[0])
        for a, b in zip(model.backbone.get_weights(), backbone, strict=True):
            np.testing.assert_array_equal(a, b)


def _dataset(roles, empty=()):
    """A dataset description with a clip in each split except those named in `empty`."""
    splits = {name: SplitInfo(name=name, role=role, shards=(), num_clips=int(name not in empty),
                              clips_per_fold={}, cross_validation_folds=(), command="")
              for name, role in roles.items()}
    return DatasetInfo("data/mine", name="mine", kind="folder", class_names=CLASSES,
                       multi_label=False, clip_seconds=1.0, splits=splits, converter={},
                       source="data/mine/dataset.json")


def test_validation_and_evaluation_splits():
    full = _dataset({"train": "train", "validation": "validation", "test": "test"})
    assert engine.evaluation_split(full) == "test"
    assert engine.validation_split(full, "test", selection="best") == ("validation", None)
    assert engine.validation_split(full, "test", selection="swa", given="train") == \
        ("train", None)
    with pytest.raises(FileNotFoundError, match="split 'dev'"):
        engine.validation_split(full, "test", selection="best", given="dev")

    audioset = _dataset({"balanced_train": "train", "eval": "eval"})
    assert engine.validation_split(audioset, "eval", selection="swa") == ("eval", None)

    no_test = _dataset({"train": "train", "validation": "validation"})
    split, note = engine.validation_split(no_test, engine.evaluation_split(no_test),
                                          selection="best")
    assert split == "validation" and "optimistic" in note

    # A converter writes a split no clip falls in, empty: it is not one to use.
    no_validation = _dataset({"train": "train", "validation": "validation", "test": "test"},
                             empty=("validation",))
    with pytest.raises(ValueError, match=r"data/mine has no validation split with clips \(its "
                       r"splits: test 1, train 1, validation 0\).*--validation_percent.*"
                       r"--selection=swa"):
        engine.validation_split(no_validation, "test", selection="best")
    empty_test = _dataset({"train": "train", "validation": "validation", "test": "test"},
                          empty=("test",))
    assert engine.evaluation_split(empty_test) == "validation"
    split, note = engine.validation_split(no_validation, "test", selection="swa")
    assert split == "test" and note.startswith("No validation split in data/mine: validating "
                                               "on 'test'")


def test_config_errors_name_the_flag():
    with pytest.raises(ValueError, match="--pe applies to a new model; --init=m.keras"):
        engine.TrainConfig(pe="none", init="m.keras", data_dir="d")
    with pytest.raises(ValueError, match="--selection=best keeps one checkpoint"):
        engine.TrainConfig(pe="none", selection="best", swa_last=2, train_steps=400)
    with pytest.raises(ValueError, match="--num_masks must be min,max"):
        engine.TrainConfig(pe="none", num_masks=(2, 1))
    with pytest.raises(ValueError, match="--fbank_stats must be mean,std with std > 0"):
        engine.TrainConfig(pe="none", fbank_stats=(-6.8, 0.0))
    with pytest.raises(ValueError, match="--frames must be >= 1"):
        engine.TrainConfig(pe="none", frames=0)
    with pytest.raises(FileNotFoundError, match="--init=missing.keras: model file not found"):
        engine.load_classifier("missing.keras")


def test_frames_and_fbank_stats_set_asts_front_end():
    config = engine.TrainConfig(pe="absolute", frames=128, fbank_stats=(-6.845978, 5.5654526))
    ast = engine._with_frames_and_stats(KaldiFbankAudioConverter(), config)
    assert ast.config == KaldiFbankConfig(target_frames=128, mean=-6.845978, std=5.5654526)
    paper = tagger().audio_converter
    assert engine._with_frames_and_stats(paper, engine.TrainConfig(pe="none", frames=98)) \
        is paper
    with pytest.raises(ValueError, match="--fbank_stats applies to AST's kaldi_fbank"):
        engine._with_frames_and_stats(paper, config)
    # A new model trains on the dataset's clips: 1 s is 98 frames of either front end.
    assert clip_frames("ast-pe-tiny", 1.0) == clip_frames("ast", 1.0) == 98


def test_speech_commands_configuration_is_asts_recipe():
    config = OwnDataConfig.named("speech_commands", data_dir="d", pe="absolute")
    assert (config.preset, config.frames, config.fbank_stats, config.batch_size,
            config.max_lr) == ("ast", 128, (-6.845978, 5.5654526), 128, 2.5e-4)
    assert (config.mask_probability, config.num_masks, config.max_freq_mask,
            config.max_time_mask) == (1.0, (1, 1), 48, 48)
    # 30 epochs of 84,843 clips in batches of 128 (663 batches), one checkpoint per epoch;
    # x0.85 for each of the 25 epochs after the 5th.
    assert (config.train_steps, config.checkpoint_every, config.warmup_steps) == \
        (30 * 663, 663, 5 * 663)
    assert config.decay_rate == pytest.approx(0.85 ** 25)
    assert config.data.mixup == 1.0 and config.selection == "best"
    # A flag given overrides the configuration's data options too.
    assert OwnDataConfig.named("speech_commands", data_dir="d", pe="none",
                               data=engine.trainer.DataOptions(mixup=0.4)).data.mixup == 0.4
    default = OwnDataConfig.named(data_dir="d", pe="none")
    assert (default.train_steps, default.checkpoint_every, default.data.mixup,
            default.selection) == (5000, 500, 0.0, "best")
    with pytest.raises(ValueError, match=r"give --pe \(a new model\) or --init"):
        OwnDataConfig.named(data_dir="d")


@pytest.fixture(scope="module")
def folder_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    sounds.write_class_folders(root / "sounds", per_class=12, seconds=0.5)
    convert_folder(str(root / "sounds"), str(root / "data"), validation_percent=25,
                   test_percent=25, num_workers=1, progress=False)
    return root


def test_a_short_run_ends_with_its_best_validation_checkpoint(folder_data, tmp_path):
    config = OwnDataConfig.named(
        "demo", data_dir=str(folder_data / "data"), pe="none", output_dir=str(tmp_path),
        batch_size=4, train_steps=8, checkpoint_every=2, warmup_steps=1, max_lr=3e-3,
        export=False)
    results = train_own_data(config, verbose=0, log=lambda line: None)

    with open(tmp_path / "training_log.csv", newline="") as f:
        validation = [float(row["val_accuracy"]) for row in csv.DictReader(f)]
    best = results["best_checkpoint"]
    assert best["step"] == 2 * (1 + int(np.argmax(validation)))
    assert best["value"] == pytest.approx(max(validation))
    assert [value for _, value in best["history"]] == pytest.approx(validation)
    assert results["validation_split"] == "validation" and results["eval_split"] == "test"
    assert results["config"]["frames"] == 48  # the clips' own: 0.5 s
    info = DatasetInfo.load(folder_data / "data")
    assert results["num_eval_clips"] == info.num_clips("test")

    # model.keras is the best checkpoint's weights, and scores the test clips as reported.
    model = keras.saving.load_model(tmp_path / "model.keras")
    with np.load(tmp_path / "best" / f"best-{best['step']:012d}.npz") as stored:
        for index, weights in enumerate(model.get_weights()):
            np.testing.assert_allclose(weights, stored[f"w{index:05d}"], rtol=1e-6)
    assert model.class_names == sounds.CLASSES and model.activation == "softmax"
    with open(tmp_path / "per_class_accuracy.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["class_name"] for row in rows] == list(sounds.CLASSES)
    assert sum(int(row["eval_clips"]) for row in rows) == results["num_eval_clips"]
    stored = json.loads((tmp_path / "metrics.json").read_text())
    assert stored["best_checkpoint"]["step"] == best["step"]
    assert 0 <= stored["accuracy"] <= 1 and stored["chance_accuracy"] >= 1 / 3
    scores = keras_astpe.tag(model, sounds.sound("whistle", 0.5, np.random.default_rng(5)),
                             sample_rate=sounds.RATE)
    assert sorted(name for name, _ in scores) == sorted(sounds.CLASSES)
    assert sum(score for _, score in scores) == pytest.approx(1.0, abs=1e-4)
