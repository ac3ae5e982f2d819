"""The shared opening of the training recipes: output folder, statistics, compile."""

import os

import keras
import numpy as np
import pytest

import keras_astpe
from keras_astpe.frontend import FrontEndConfig
from keras_astpe.models.classifier import CLIP_VALUE
from keras_astpe.normalization import STATS_FILENAME, NormalizationStats
from keras_astpe.training import trainer


@pytest.mark.backend_agnostic
def test_prepare_output_dir_errors(tmp_path):
    assert trainer.prepare_output_dir(tmp_path / "a" / "b") == str(tmp_path / "a" / "b")
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="--output_dir=.*file is a file"):
        trainer.prepare_output_dir(tmp_path / "file")
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores permissions
            pytest.skip("running as a user that can write anywhere")
        with pytest.raises(PermissionError, match="--output_dir=.*cannot be written"):
            trainer.prepare_output_dir(locked / "run")
    finally:
        os.chmod(locked, 0o700)


@pytest.mark.backend_agnostic
def test_resolve_stats_keeps_run_stats_and_copies_source(tmp_path):
    frontend = FrontEndConfig()
    source, run = tmp_path / "data", tmp_path / "run"
    os.makedirs(run)
    NormalizationStats(-3.0, 2.0, 10, frontend).save(source)
    stats, skipped = trainer.resolve_stats(run, [], frontend, source=str(source))
    assert (stats.low, stats.high, skipped) == (-3.0, 2.0, 0)
    assert (run / STATS_FILENAME).exists()
    NormalizationStats(-1.0, 1.0, 10, frontend).save(source)
    assert trainer.resolve_stats(run, [], frontend, source=str(source))[0].low == -3.0
    # Statistics a pretrained model carries.
    other = tmp_path / "other"
    other.mkdir()
    carried = NormalizationStats(-4.0, 3.0, 5, frontend)
    assert trainer.resolve_stats(other, [], frontend, source=carried)[0] == carried
    with pytest.raises(ValueError, match="front end"):
        trainer.resolve_stats(run, [], FrontEndConfig(num_mel_bins=128))


@pytest.mark.parametrize("multi_label", [True, False])
def test_compile_classifier_is_the_papers(multi_label):
    model = keras_astpe.build_model("none", preset="ast-pe-tiny", num_classes=3,
                                    activation="sigmoid" if multi_label else "softmax")
    trainer.compile_classifier(model, 1e-3)
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert model.optimizer.clipvalue == CLIP_VALUE == 1.0
    x = np.random.rand(4, 64, 64).astype("float32")
    y = keras.utils.to_categorical([0, 1, 2, 0], 3)
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    expected = {"loss", "mAP", "AUC"} if multi_label else {"loss", "accuracy"}
    assert set(logs) == expected


@pytest.mark.backend_agnostic
def test_skip_counter_adds_reports():
    class Report:
        def __init__(self, records):
            self.records = records

    class Dataset:
        def __init__(self, records):
            self.bad_records = None if records is None else Report(records)

    counter = trainer.SkipCounter()
    counter.track("training", Dataset(2))
    counter.track("training", Dataset(3))
    counter.track("evaluation", Dataset(None))
    counter.add("the statistics pass", 4)
    assert counter.counts() == {"training": 5, "the statistics pass": 4}
    assert trainer.SkipCounter().summary() is None
