"""posemb.cpp: the C++ modules (``posemb::nn``) bound to Python.

Each class is a ``torch.nn.Module`` (torch's ``torch.nn.cpp.ModuleWrapper``,
made by ``torch::python::bind_module``) that drives the very C++ object a
LibTorch program builds: ``posemb.cpp.SinusoidalPositionalEmbedding``,
``LearnedPositionalEmbedding``, ``BertEmbeddings``, ``RotaryEmbedding``,
``FourierPositionalEmbedding``, ``Timesteps``, ``SinCos2dPositionalEmbedding`` and
``SinCos3dPositionalEmbedding``,
with the constructor and ``forward`` arguments of their twins in
:mod:`posemb.nn` (the C++ options, e.g. ``sinusoidal_init`` for the learned
table; ``RotaryEmbedding`` takes ``base``, ``linear_factor`` or a precomputed
``inv_freq`` and ``attention_scaling``, and always a ``k``). Parameters and
buffers are the C++ tensors (``named_parameters()``, ``module.cpp_module``).

The extension, ``lib/_cpp*.so``, links the ``libposemb.so`` that ``import
posemb`` has loaded (the dynamic loader finds it by its soname), so the ops
are registered once in the process.
"""
from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import sys
from pathlib import Path

import torch

from . import _LIBRARY  # noqa: F401  (libposemb.so loaded first)


def _load():
    lib = Path(__file__).resolve().parent / "lib"
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = lib / f"_cpp{suffix}"
        if path.exists():
            spec = importlib.util.spec_from_file_location("posemb._cpp", path)
            module = importlib.util.module_from_spec(spec)
            sys.modules["posemb._cpp"] = module
            spec.loader.exec_module(module)
            return module
    raise ImportError(f"posemb.cpp: no _cpp extension in {lib}; build the package with "
                      "`pip install --no-build-isolation .` (CMake's POSEMB_PYTHON=ON)")


_cpp = _load()
SinusoidalPositionalEmbedding = _cpp.SinusoidalPositionalEmbedding
LearnedPositionalEmbedding = _cpp.LearnedPositionalEmbedding
BertEmbeddings = _cpp.BertEmbeddings
RotaryEmbedding = _cpp.RotaryEmbedding
FourierPositionalEmbedding = _cpp.FourierPositionalEmbedding
Timesteps = _cpp.Timesteps
SinCos2dPositionalEmbedding = _cpp.SinCos2dPositionalEmbedding
SinCos3dPositionalEmbedding = _cpp.SinCos3dPositionalEmbedding
for _cls in (SinusoidalPositionalEmbedding, LearnedPositionalEmbedding, BertEmbeddings, RotaryEmbedding,
             FourierPositionalEmbedding, Timesteps, SinCos2dPositionalEmbedding, SinCos3dPositionalEmbedding):
    _cls.__module__ = __name__  # the wrapper classes are made at import, in no module of their own
del _cls


def _load_flat_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                          error_msgs):
    """BertEmbeddings' children are C++ modules with no Python face, so its
    binding shows their parameters flat (``_parameters`` holds
    ``word_embeddings.weight``, ..., ``_modules`` is empty): ``state_dict()``
    gives Hugging Face's keys; this loads them, strict as torch is."""
    torch.nn.Module._load_from_state_dict(self, state_dict, prefix, local_metadata, False, missing_keys,
                                          unexpected_keys, error_msgs)
    if strict:
        names = set(self._parameters.keys())
        missing_keys.extend(prefix + n for n in names if prefix + n not in state_dict)
        unexpected_keys.extend(k for k in state_dict if k.startswith(prefix) and k[len(prefix):] not in names)


BertEmbeddings._load_from_state_dict = _load_flat_state_dict


def _chaining(cls):
    """torch's binding copies the C++ module's to(), float(), train(), ...
    onto each instance, and they return None; torch.nn.Module's return the
    module, so that `posemb.cpp.X(...).double()` is the module."""
    init = cls.__init__

    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        for name in ("to", "cpu", "cuda", "float", "double", "half", "train", "eval", "zero_grad"):
            setattr(self, name, functools.partial(_call_and_return, self, getattr(self.cpp_module, name)))

    cls.__init__ = __init__


def _call_and_return(module, method, *args, **kwargs):
    method(*args, **kwargs)
    return module


for _cls in (SinusoidalPositionalEmbedding, LearnedPositionalEmbedding, BertEmbeddings, RotaryEmbedding):
    _chaining(_cls)
del _cls

__all__ = ["BertEmbeddings", "FourierPositionalEmbedding", "LearnedPositionalEmbedding", "RotaryEmbedding",
           "SinCos2dPositionalEmbedding", "SinCos3dPositionalEmbedding", "SinusoidalPositionalEmbedding", "Timesteps"]
