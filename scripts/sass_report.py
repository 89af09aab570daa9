"""What posemb's CUDA kernels really compile to, read from the machine code.

    python scripts/sass_report.py BINARY [BINARY ...] [--out FILE] [--check]

BINARY is an object file, a library or an executable with sm_90 code (the
nvcc objects that scripts/check_cuda_build.sh leaves in build/kernels-sm90/,
or build/gpu/libposemb.so on a GPU machine). For every kernel instantiation
it prints registers, stack frame, local-memory instructions (LDL/STL: a
spilled register or an array the compiler could not keep in registers),
128-bit global loads and stores (LDG.E.128 / STG.E.128), narrower global
stores, and FP64 instructions. ``--check [KERNEL ...]`` exits 1 when a kernel
(of those named, by the start of their names) breaks the budget of DESIGN.md
section 8 (README: "Reading the machine code"):

- an fp32/bf16/fp16 kernel with FP64 instructions;
- any kernel with local memory (a stack frame or LDL/STL);
- a kernel with 128-bit loads whose stores are all narrower;
- a vector-path kernel (``--vector PATTERN ...``: names matching one of these
  regular expressions) without both LDG.E.128 and STG.E.128.

Needs ``cuobjdump`` (and ``nvdisasm`` for -sass) on PATH or in the pip
packages nvidia-cuda-cuobjdump / nvidia-cuda-nvdisasm of this Python.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

# FP64 arithmetic, comparisons, conversions to/from 64-bit floats, and the
# 64-bit MUFU seeds. (Plain 64-bit integer or address arithmetic is not FP64.)
FP64 = re.compile(r"^(DADD|DMUL|DFMA|DSETP|DMNMX|DMMA|DSET)\b|\.F64\b|^MUFU\.(RCP|RSQ)64H")


@dataclass
class Kernel:
    mangled: str
    name: str = ""
    registers: int = 0
    stack: int = 0
    ops: Dict[str, int] = field(default_factory=dict)

    def count(self, pattern: str) -> int:
        rx = re.compile(pattern)
        return sum(n for op, n in self.ops.items() if rx.search(op))

    @property
    def ldg128(self) -> int:
        return self.count(r"^LDG\..*\b128\b")

    @property
    def stg128(self) -> int:
        return self.count(r"^STG\..*\b128\b")

    @property
    def stg_narrow(self) -> int:
        return self.count(r"^STG\b") - self.stg128

    @property
    def local(self) -> int:
        return self.count(r"^(LDL|STL)\b")

    @property
    def fp64(self) -> int:
        return sum(n for op, n in self.ops.items() if FP64.search(op))

    @property
    def is_double(self) -> bool:
        return re.search(r"\bdouble\b", self.name) is not None

    def violations(self, vector: bool = False) -> List[str]:
        found = []
        if vector and not (self.ldg128 and self.stg128):
            found.append(f"a vector-path kernel with {self.ldg128} LDG.128 and {self.stg128} STG.128")
        if self.fp64 and not self.is_double:
            found.append(f"{self.fp64} FP64 instructions")
        if self.stack or self.local:
            found.append(f"local memory (stack {self.stack} B, {self.local} LDL/STL)")
        if self.ldg128 and self.count(r"^STG\b") and not self.stg128:
            found.append("128-bit loads but no 128-bit store")
        return found


def tool(name: str) -> str:
    """``name`` from PATH, else from the nvidia pip packages of this Python."""
    found = shutil.which(name)
    if found:
        return found
    site = Path(sysconfig.get_paths()["purelib"]) / "nvidia"
    for candidate in sorted(site.glob(f"*/bin/{name}")):
        return str(candidate)
    sys.exit(f"sass_report: no {name} on PATH or in {site}; "
             "pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm (pinned in requirements-dev.txt)")


def demangle(names: List[str]) -> Dict[str, str]:
    cxxfilt = shutil.which("c++filt")
    if not cxxfilt or not names:
        return {n: n for n in names}
    out = subprocess.run([cxxfilt], input="\n".join(names), capture_output=True, text=True, check=True).stdout
    return dict(zip(names, out.splitlines()))


def short(demangled: str) -> str:
    """posemb::(anonymous namespace)::rotary_kernel<__nv_bfloat16>(posemb::RotaryParams)
    -> rotary_kernel<bf16>"""
    name = re.sub(r"\(anonymous namespace\)::", "", demangled)
    depth, cut = 0, len(name)
    for i, ch in enumerate(name):  # drop a parameter list that follows the template arguments
        depth += ch == "<"
        depth -= ch == ">"
        if ch == "(" and depth == 0:
            cut = i
            break
    name = name[:cut].replace("posemb::", "")
    name = re.sub(r"^void ", "", name)
    name = re.sub(r"\((\w+)\)(\d+)", r"\1=\2", name)  # (Layout)0 -> Layout=0
    for long, abbrev in (("__nv_bfloat16", "bf16"), ("__half", "fp16"), ("bool=1", "true"), ("bool=0", "false")):
        name = name.replace(long, abbrev)
    return re.sub(r"\s+", " ", name)


def read(binary: str, cuobjdump: str) -> List[Kernel]:
    env = dict(os.environ, PATH=f"{Path(cuobjdump).parent}{os.pathsep}{os.environ.get('PATH', '')}")  # nvdisasm
    run = lambda *args: subprocess.run([cuobjdump, *args, binary], capture_output=True, text=True,  # noqa: E731
                                       env=env, check=True).stdout
    kernels: Dict[str, Kernel] = {}
    current: Optional[Kernel] = None
    for line in run("--dump-resource-usage").splitlines():
        m = re.match(r"\s*Function (\S+):", line)
        if m:
            current = kernels.setdefault(m.group(1), Kernel(m.group(1)))
            continue
        m = re.search(r"REG:(\d+) STACK:(\d+)", line)
        if m and current is not None:
            current.registers, current.stack = int(m.group(1)), int(m.group(2))
    current = None
    for line in run("-sass").splitlines():
        m = re.match(r"\s*Function : (\S+)", line)
        if m:
            current = kernels.setdefault(m.group(1), Kernel(m.group(1)))
            continue
        m = re.match(r"\s*/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", line)
        if m and current is not None:
            current.ops[m.group(1)] = current.ops.get(m.group(1), 0) + 1
    names = demangle(list(kernels))
    for k in kernels.values():
        k.name = short(names[k.mangled])
    return [k for k in kernels.values() if k.ops]


def table(kernels: List[Kernel], vector: List[str]) -> str:
    header = ("kernel", "regs", "stack", "LDL/STL", "LDG.128", "STG.128", "STG narrow", "FP64", "budget")
    rows = [header] + [
        (k.name, k.registers, k.stack, k.local, k.ldg128, k.stg128, k.stg_narrow, k.fp64,
         "; ".join(k.violations(is_vector(k, vector))) or "ok")
        for k in sorted(kernels, key=lambda k: k.name)
    ]
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(header) - 1)]
    lines = []
    for r in rows:
        cells = [str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells) + "  " + str(r[-1]))
    return "\n".join(lines)


def is_vector(kernel: Kernel, patterns: List[str]) -> bool:
    return any(re.search(p, kernel.name) for p in patterns)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="sass_report.py", description=__doc__.splitlines()[0])
    parser.add_argument("binaries", nargs="+")
    parser.add_argument("--out", help="also write the report here")
    parser.add_argument("--check", nargs="*", metavar="KERNEL",
                        help="exit 1 when a kernel breaks the budget (only kernels whose names start "
                             "with one of these, when given)")
    parser.add_argument("--vector", nargs="*", default=[], metavar="PATTERN",
                        help="kernels whose names match one of these regular expressions are vector paths: "
                             "they must have both 128-bit loads and 128-bit stores")
    args = parser.parse_args(argv)
    cuobjdump = tool("cuobjdump")
    tool("nvdisasm")
    kernels = [k for b in args.binaries for k in read(b, cuobjdump)]
    if not kernels:
        print(f"sass_report: no sm_90 kernels in {args.binaries}", file=sys.stderr)
        return 1
    bad = [k for k in kernels if k.violations(is_vector(k, args.vector))]
    checked = [k for k in bad if args.check is not None and (not args.check or k.name.startswith(tuple(args.check)))]
    report = table(kernels, args.vector)
    summary = (f"{len(kernels)} kernels: {sum(1 for k in kernels if k.stg128)} with 128-bit stores, "
               f"{sum(1 for k in kernels if k.fp64 and not k.is_double)} non-fp64 with FP64, "
               f"{sum(1 for k in kernels if k.stack or k.local)} with local memory; "
               f"{len(bad)} over budget")
    print(report)
    print(summary)
    if args.out:
        Path(args.out).write_text(report + "\n" + summary + "\n")
    for k in checked:
        print(f"sass_report: {k.name} is over budget: {'; '.join(k.violations(is_vector(k, args.vector)))}",
              file=sys.stderr)
    return 1 if checked else 0


if __name__ == "__main__":
    sys.exit(main())
