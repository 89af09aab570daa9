"""Builds the posemb Python package.

The C++/CUDA library is built by CMakeLists.txt (the one source list, shared
with C++ users) and installed into the package: posemb/lib/libposemb.so, the
public headers under posemb/include, and the CMake package under
posemb/share/cmake, so a pip-installed posemb also serves C++ builds. With
POSEMB_PYTHON=ON CMake also builds posemb/lib/_cpp*.so (one translation unit,
linking libposemb.so and torch_python): the C++ modules bound to Python as
posemb.cpp.

Environment:
  POSEMB_CUDA=1/0     force the CUDA kernels on or off (default: when nvcc
                      and a CUDA build of torch are there)
  POSEMB_CUDA_ARCH    CUDA architectures, default "90"
  MAX_JOBS            parallel compile jobs (default: all cores)
"""
import os
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    """Configures, builds and installs CMakeLists.txt into the package dir."""

    def _package_dir(self, ext):
        if self.inplace or getattr(self, "editable_mode", False):
            return ROOT / "python" / "posemb"  # editable: next to the sources
        return Path(self.get_ext_fullpath(ext.name)).resolve().parent

    def build_extension(self, ext):
        import torch

        cuda = {"1": "ON", "0": "OFF"}.get(os.environ.get("POSEMB_CUDA", ""), "AUTO")
        # A fixed build folder keeps rebuilds incremental (ninja) across installs.
        build_dir = ROOT / "build" / f"cmake-py{sys.version_info[0]}{sys.version_info[1]}"
        build_dir.mkdir(parents=True, exist_ok=True)
        configure = [
            "cmake", str(ROOT), "-G", "Ninja",
            f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
            f"-DCMAKE_INSTALL_PREFIX={self._package_dir(ext)}",
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DPOSEMB_CUDA={cuda}",
            f"-DPOSEMB_CUDA_ARCHITECTURES={os.environ.get('POSEMB_CUDA_ARCH', '90')}",
            f"-DPython_EXECUTABLE={sys.executable}",
            "-DPOSEMB_PYTHON=ON",  # posemb/lib/_cpp*.so: posemb.cpp, the C++ modules bound to Python
        ]
        jobs = os.environ.get("MAX_JOBS", str(os.cpu_count() or 1))
        subprocess.run(configure, cwd=build_dir, check=True)
        subprocess.run(["cmake", "--build", ".", "-j", jobs], cwd=build_dir, check=True)
        subprocess.run(["cmake", "--install", "."], cwd=build_dir, check=True)

    def copy_extensions_to_source(self):
        pass  # editable builds install into the source package directly

    def get_outputs(self):
        # CMake installs the library and posemb/lib/_cpp*.so (which posemb.cpp loads by path).
        return []

    def get_output_mapping(self):
        return {}


setup(
    name="posemb",
    version="0.1.0",
    description="Fused positional embeddings for PyTorch and LibTorch",
    packages=["posemb"],
    package_dir={"": "python"},
    ext_modules=[CMakeExtension("posemb._lib")],
    cmdclass={"build_ext": CMakeBuild},
    python_requires=">=3.9",
    install_requires=["torch>=2.6"],
    zip_safe=False,
)
