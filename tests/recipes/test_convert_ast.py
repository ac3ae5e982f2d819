"""recipes/convert_ast.py as a user runs it: a subprocess on small AST checkpoints."""


import keras
import numpy as np
import pytest

from keras_astpe.conversion import convert_ast_checkpoint
from tests.conversion import ast_reference
from tests.recipes.running import run_recipe

pytestmark = pytest.mark.backend_agnostic



def _run(*args):
    return run_recipe("convert_ast", *args)


def _scores(model, features):
    return keras.ops.convert_to_numpy(model(features))


def test_transformers_folder_to_keras(tmp_path):
    folder = ast_reference.write_hf_folder(tmp_path / "ast-small")
    output = tmp_path / "out" / "ast.keras"
    result = _run(f"--checkpoint={folder}", f"--output={output}", "--activation=none")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (f"Wrote {output}: AST, 2 blocks of 192, 101 time x 12 frequency patches, 5 classes"
            in result.stdout)
    model = keras.saving.load_model(output, safe_mode=True)
    assert model.class_names == tuple(f"class {i}" for i in range(5))
    features = ast_reference.features(batch=1)
    np.testing.assert_allclose(_scores(model, features),
                               _scores(convert_ast_checkpoint(folder, activation=None),
                                       features), atol=1e-6)


def test_pth_with_class_names_and_statistics(tmp_path):
    torch = pytest.importorskip("torch", reason="a .pth is read with torch")
    folder = ast_reference.write_hf_folder(tmp_path / "hf", seed=3)
    from keras_astpe.conversion.state_dicts import read_state_dict
    from keras_astpe.conversion.transformers_ast import timm_names

    state = timm_names(read_state_dict(folder / "model.safetensors"), "x")
    original = {}
    for name, value in state.items():
        if name.startswith("head"):
            index = "0" if name.startswith("head_norm") else "1"
            original[f"module.mlp_head.{index}.{name.split('.')[-1]}"] = torch.tensor(value)
        elif ".attn.q." in name:
            parts = [state[name.replace(".attn.q.", f".attn.{p}.")] for p in "qkv"]
            original["module.v." + name.replace(".attn.q.", ".attn.qkv.")] = torch.tensor(
                np.concatenate(parts))
        elif ".attn.k." not in name and ".attn.v." not in name:
            original["module.v." + name] = torch.tensor(value)
    torch.save(original, tmp_path / "ast.pth")
    (tmp_path / "classes.csv").write_text("index,name\n" + "".join(
        f"{i},sound {i}\n" for i in range(5)))
    output = tmp_path / "ast.keras"
    result = _run(f"--checkpoint={tmp_path / 'ast.pth'}", f"--output={output}",
                  f"--class_names={tmp_path / 'classes.csv'}", "--mean=-6.6268077",
                  "--std=5.358466")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mean -6.62681, std 5.35847" in result.stdout
    model = keras.saving.load_model(output, safe_mode=True)
    assert model.class_names == tuple(f"sound {i}" for i in range(5))
    assert model.audio_converter.config.mean == -6.6268077


@pytest.mark.parametrize("args, message", [
    (["--checkpoint={tmp}/missing", "--output={tmp}/a.keras"], "missing: no such checkpoint"),
    (["--checkpoint={tmp}", "--output={tmp}/a.h5"], "the file name must end in .keras"),
    (["--checkpoint={tmp}", "--output={tmp}/a.keras"], "no config.json"),
])
def test_bad_input_is_one_line(args, message, tmp_path):
    result = _run(*(arg.format(tmp=tmp_path) for arg in args))
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error:") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
