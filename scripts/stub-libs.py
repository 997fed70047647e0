#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Writes stand-in shared libraries for the optional I/O engines of a binary (fio's RBD, Gluster,
NBD, RDMA and PMEM engines, which the guest never uses).

    scripts/stub-libs.py BINARY OUTDIR SONAME...

For each SONAME, OUTDIR/SONAME exports every function BINARY imports from it, with the symbol
versions BINARY asks for; each traps if called. The real libraries pull in some 60 MB of further
libraries (Ceph, ICU, GnuTLS, ...), which made the guest image three times larger and made every
fio start take seconds on the debug kernel under TCG: the binary is linked with BIND_NOW, so the
dynamic loader resolved all of their symbols at each start.
"""

import os
import re
import subprocess
import sys
import tempfile


def main():
    binary, outdir, *sonames = sys.argv[1:]
    os.makedirs(outdir, exist_ok=True)
    dynsyms = subprocess.run(["objdump", "-T", binary], capture_output=True, text=True, check=True).stdout
    private = subprocess.run(["objdump", "-p", binary], capture_output=True, text=True, check=True).stdout
    # Versions required from each library ("required from libibverbs.so.1:" and its lines).
    versions = {}
    current = None
    for line in private.splitlines():
        m = re.match(r"\s+required from (\S+):", line)
        if m:
            current = versions.setdefault(m.group(1), [])
            continue
        m = re.match(r"\s+0x[0-9a-f]+ 0x[0-9a-f]+ \d+ (\S+)", line)
        if m and current is not None:
            current.append(m.group(1))
        elif not line.startswith(" "):
            current = None
    # Imported functions: "... DF *UND* 0000 (VERSION) name" or "... Base name".
    imports = []
    for line in dynsyms.splitlines():
        m = re.search(r"\sDF \*UND\*\s+[0-9a-f]+\s+(?:\((\S+)\)|Base)\s+(\S+)$", line)
        if m:
            imports.append((m.group(1), m.group(2)))
    libpaths = {}
    for line in subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout.splitlines():
        m = re.match(r"\s*(\S+) => (/\S+)", line)
        if m:
            libpaths[m.group(1)] = m.group(2)
    for soname in sonames:
        real = libpaths.get(soname)
        if real is None:
            sys.exit(f"stub-libs: {binary} does not link {soname}")
        defined = set()
        out = subprocess.run(["nm", "-D", "--defined-only", real], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3:
                defined.add(parts[2].split("@")[0])
        vers = versions.get(soname, [])
        funcs = [(v, name) for v, name in imports if name in defined and (v is None or v in vers)]
        if not funcs:
            sys.exit(f"stub-libs: {binary} imports nothing from {soname}")
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "stub.c")
            with open(src, "w") as f:
                for _, name in funcs:
                    f.write(f"void {name}(void) {{ __builtin_trap(); }}\n")
            cmd = ["cc", "-shared", "-fPIC", "-O2", "-nostdlib", "-o", os.path.join(outdir, soname),
                   f"-Wl,-soname,{soname}", src]
            if vers:
                script = os.path.join(tmp, "versions")
                with open(script, "w") as f:
                    for i, v in enumerate(vers):
                        names = [n for fv, n in funcs if fv == v or (fv is None and i == 0)]
                        f.write(f"{v} {{ global: {' '.join(n + ';' for n in names)} }};\n")
                cmd.append(f"-Wl,--version-script={script}")
            subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
