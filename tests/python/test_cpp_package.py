"""The pip-installed posemb serves C++ builds: examples/cpp (the README's C++
example) finds it with find_package(posemb), builds, links and runs."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import posemb

ROOT = Path(__file__).resolve().parents[2]


def readme_blocks(language: str):
    return re.findall(rf"```{language}\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_readme_cpp_example_is_the_built_example():
    assert (ROOT / "examples/cpp/main.cpp").read_text() in readme_blocks("cpp")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cmake") is None, reason="no cmake")
def test_cpp_example_builds_against_the_installed_package(tmp_path):
    prefix = f"{posemb.cmake_prefix_path};{torch.utils.cmake_prefix_path}"
    build = tmp_path / "build"
    subprocess.run(["cmake", "-S", str(ROOT / "examples/cpp"), "-B", str(build), "-G", "Ninja",
                    f"-DCMAKE_PREFIX_PATH={prefix}", "-Wno-dev"], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build)], check=True, capture_output=True)
    out = subprocess.run([str(build / "sinusoidal_example")], check=True, capture_output=True, text=True).stdout
    print(out)
    assert "posemb::nn::SinusoidalPositionalEmbedding(16, layout=half, freqs=fairseq" in out
    assert "output shape: [2, 5, 16]" in out
    diff = float(re.search(r"max abs difference from the table: (\S+)", out).group(1))
    assert diff <= 1e-5
    assert "embedding grad is finite: true" in out


def test_readme_python_examples_run():
    blocks = readme_blocks("python")
    assert blocks, "the README has Python examples"
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})
