"""posemb: fused positional embeddings for PyTorch and LibTorch.

Importing posemb loads libposemb.so, which registers the ops under
``torch.ops.posemb`` (CPU and CUDA kernels, C++ autograd, fake kernels).
"""
from pathlib import Path

import torch

import os

_HERE = Path(__file__).resolve().parent
# POSEMB_LIBRARY loads another build of the same sources instead (the
# sanitizer build the tests run against: README, Tests).
_LIBRARY = Path(os.environ.get("POSEMB_LIBRARY") or _HERE / "lib" / "libposemb.so")
if not _LIBRARY.exists():
    raise ImportError(
        f"posemb: {_LIBRARY} is missing; build the package with "
        "`pip install --no-build-isolation .` (or `-e .`)"
    )
torch.ops.load_library(str(_LIBRARY))

#: Folder for CMAKE_PREFIX_PATH so that find_package(posemb) finds this
#: installation (as torch.utils.cmake_prefix_path does for Torch).
cmake_prefix_path = str(_HERE / "share" / "cmake")

from . import nn, rope  # noqa: E402
from .ops import (  # noqa: E402
    bert_embeddings,
    fourier_features,
    learned_add,
    make_positions,
    rotary,
    sinusoidal_add,
    sinusoidal_add_,
    sinusoidal_table,
)
from .ops import sincos_2d_add, sincos_2d_positions, sincos_2d_table, timestep_embedding  # noqa: E402

__version__ = "0.1.0"


def __getattr__(name: str):
    # posemb.hf on first use (it needs no transformers import either way);
    # posemb.cpp, the C++ modules bound to Python, on first use too.
    if name in ("hf", "cpp", "diffusers"):
        import importlib

        return importlib.import_module("." + name, __name__)
    raise AttributeError(f"module 'posemb' has no attribute {name!r}")
__all__ = [
    "bert_embeddings",
    "cmake_prefix_path",
    "fourier_features",
    "learned_add",
    "make_positions",
    "nn",
    "rotary",
    "sinusoidal_add",
    "sinusoidal_add_",
    "sinusoidal_table",
    "sincos_2d_add",
    "sincos_2d_positions",
    "sincos_2d_table",
    "timestep_embedding",
]
