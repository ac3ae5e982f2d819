import dataclasses

import pytest

import keras_astpe
from keras_astpe.models import POSITION_ENCODINGS, PositionEncoding, get_position_encoding

pytestmark = pytest.mark.backend_agnostic  # plain Python, no tensors


def test_table_is_the_seven_rows_of_the_paper():
    assert keras_astpe.PE_KINDS == tuple(POSITION_ENCODINGS)
    parts = {name: (pe.absolute_table, pe.attention_bias, pe.peg, pe.learned_tables)
             for name, pe in POSITION_ENCODINGS.items()}
    assert parts == {
        "none": ("none", "none", False, ()),
        "absolute": ("grid", "none", False, ("absolute",)),
        "alibi_2d": ("none", "alibi_2d", False, ()),
        "time_alibi": ("frequency", "alibi_time", False, ("absolute",)),
        "learned_relative": ("none", "learned_relative", False, ("relative",)),
        "conditional": ("none", "none", True, ()),
        "conditional_absolute": ("grid", "none", True, ("absolute",)),
    }
    for pe in POSITION_ENCODINGS.values():
        assert pe.description and "\n" not in pe.description
        assert (pe.no_table_reason is None) == bool(pe.learned_tables)


def test_descriptions_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        POSITION_ENCODINGS["none"].peg = True


def test_invalid_descriptions_are_refused():
    with pytest.raises(ValueError, match="absolute_table"):
        PositionEncoding("x", "x", absolute_table="time")
    with pytest.raises(ValueError, match="attention_bias"):
        PositionEncoding("x", "x", attention_bias="rotary")
    with pytest.raises(ValueError, match="no_table_reason"):
        PositionEncoding("x", "x")  # no table and no reason
    with pytest.raises(ValueError, match="no_table_reason"):
        PositionEncoding("x", "x", absolute_table="grid", no_table_reason="none")


def test_unknown_kind():
    assert get_position_encoding("time_alibi") is POSITION_ENCODINGS["time_alibi"]
    with pytest.raises(ValueError, match="Unknown position_encoding 'rotary'"):
        get_position_encoding("rotary")
