"""The class-folder demo: Speech Commands' layout, varied files, idempotence, conversion."""

import os
import re

import pytest
import soundfile as sf

from keras_astpe.data.dataset_info import DatasetInfo
from tfrecords_tools import demo

pytestmark = pytest.mark.backend_agnostic

PER_CLASS = demo.SOUNDS_PER_CLASS["tiny"]


@pytest.fixture(scope="module")
def sounds(tmp_path_factory):
    return demo.generate_sounds_demo(str(tmp_path_factory.mktemp("demo")), seed=2,
                                     size="tiny")


def test_a_folder_per_class_of_varied_files(sounds):
    root = sounds["sounds"]
    assert sorted(os.listdir(root)) == ["_background_noise_", *demo.SOUNDS_CLASSES]
    rates, channels, extensions, sources = set(), set(), set(), {}
    for name in demo.SOUNDS_CLASSES:
        files = sorted(os.listdir(os.path.join(root, name)))
        assert len(files) == PER_CLASS
        for file_name in files:
            match = re.fullmatch(r"([0-9a-f]{8})_nohash_([01])\.(wav|flac|ogg)", file_name)
            assert match, file_name
            sources.setdefault(match.group(1), set()).add(int(match.group(2)))
            info = sf.info(os.path.join(root, name, file_name))
            assert info.duration == pytest.approx(demo.SOUNDS_SECONDS, abs=0.01)
            rates.add(info.samplerate)
            channels.add(info.channels)
            extensions.add(match.group(3))
    assert rates == {16000, 22050, 44100} and channels == {1, 2}
    assert extensions == {"wav", "flac", "ogg"}
    assert {0, 1} in sources.values()  # two takes of one source
    noise = sf.info(os.path.join(root, "_background_noise_", "pink_noise.wav"))
    assert noise.duration == pytest.approx(10.0)


def test_idempotent_deterministic_and_never_over_foreign_folders(tmp_path, sounds):
    names = {name: os.path.getmtime(os.path.join(sounds["sounds"], "bell", name))
             for name in os.listdir(os.path.join(sounds["sounds"], "bell"))}
    assert demo.generate_sounds_demo(sounds["root"], seed=2, size="tiny") == sounds
    assert names == {name: os.path.getmtime(os.path.join(sounds["sounds"], "bell", name))
                     for name in os.listdir(os.path.join(sounds["sounds"], "bell"))}
    again = demo.generate_sounds_demo(str(tmp_path / "again"), seed=2, size="tiny")
    assert sorted(os.listdir(os.path.join(again["sounds"], "bell"))) == sorted(names)
    (tmp_path / "foreign" / "sounds").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="not made by tfrecords_tools.demo"):
        demo.generate_sounds_demo(str(tmp_path / "foreign"), size="tiny")


def test_prepare_demo_data_splits_it_by_the_file_name_hash(tmp_path):
    data_dir = demo.prepare_demo_data("sounds", root=tmp_path, size="tiny", progress=False)
    info = DatasetInfo.load(data_dir)
    assert info.class_names == demo.SOUNDS_CLASSES and not info.multi_label
    assert info.clip_seconds == demo.SOUNDS_SECONDS
    assert {name: split.role for name, split in info.splits.items()} == {
        "train": "train", "validation": "validation", "test": "test"}
    assert sum(info.num_clips(split) for split in info.splits) == 5 * PER_CLASS
    assert demo.prepare_demo_data("sounds", root=tmp_path, size="tiny") == data_dir
    assert not os.path.exists(tmp_path / "audioset")  # only the demo asked for
