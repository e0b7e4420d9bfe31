"""The JavaScript/WebAssembly runtime of the web export: pinned npm packages, fetched once with `npm pack`.

Nothing is vendored in tailor's repository (onnxruntime-web's WebAssembly binary alone is 14 MB). At export time
`npm pack NAME@VERSION` downloads each pinned package's tarball into a cache folder (no `node_modules`, no
install scripts run); every tarball is checked against the registry's sha512 integrity pinned below before
the few files the page needs are copied out of it. Later exports reuse the cache and need no network.

The page loads, in total about 15 MB (measured with the versions below):

- onnxruntime-web 1.31.1 (MIT): `ort.wasm.bundle.min.mjs` (77 KB, the WebAssembly backend's JavaScript) and
  `ort-wasm-simd-threaded.wasm` (14.8 MB), which runs the ONNX graph;
- @huggingface/tokenizers 0.2.0 (Apache-2.0, 37 KB): the tokenizer from tokenizer.json, the same code
  transformers.js uses;
- @huggingface/jinja 0.5.13 (MIT, 120 KB): the chat template, the Jinja engine of transformers.js.

JavaScript modules are written with a `.js` suffix so that every static server sends them with a JavaScript
content type (some map `.mjs` to application/octet-stream, which browsers refuse for modules).
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tailor.errors import TailorError


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    license: str
    integrity: str                    # the registry's dist.integrity (sha512 of the tarball)
    files: tuple[tuple[str, str], ...]  # (path in the tarball, name in OUT/runtime/)

    @property
    def tarball(self) -> str:  # the name `npm pack` gives the file
        return f"{self.name.lstrip('@').replace('/', '-')}-{self.version}.tgz"


PACKAGES = (
    Package("onnxruntime-web", "1.31.1", "MIT",
            "sha512-5GeH+bWQ+HxM10z7erGlsWqryrwMbSvm/1tkIsKTT48g0fI19VXVVC435t4t7VsPdSQeS7NmuZPXrQ73k82URw==",
            (("package/dist/ort.wasm.bundle.min.mjs", "ort.wasm.bundle.min.js"),
             ("package/dist/ort-wasm-simd-threaded.wasm", "ort-wasm-simd-threaded.wasm"))),
    Package("@huggingface/tokenizers", "0.2.0", "Apache-2.0",
            "sha512-LidMHe1FpcSYH4vcSjXooda34pC0M8m1gmDOv7SQi6Iv+ib1zX7J3sHBCC9/3FPCkn2k1b55FneVqMRxrr99pg==",
            (("package/dist/tokenizers.min.mjs", "tokenizers.min.js"), ("package/LICENSE", "LICENSE-tokenizers.txt"))),
    Package("@huggingface/jinja", "0.5.13", "MIT",
            "sha512-jM17MqFily1iyT/1LD3r5w8/CZiyapVB0+7vOw48PfVtzyKsXStmHE4jVTyDAD05Tqv3un1xrS9ILUU1ugQAYQ==",
            (("package/dist/index.js", "jinja.js"),)),
)
NPM_FIX = ("install Node.js and npm (Debian/Ubuntu: `apt-get install nodejs npm`; other systems: "
           "https://nodejs.org), then export again; npm is used once, later exports reuse the cache")


def cache_dir() -> Path:
    """Where the tarballs are kept: $XDG_CACHE_HOME/tailor/web-runtime (default ~/.cache/tailor/web-runtime)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tailor" / "web-runtime"


def _integrity(path: Path) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def _npm_pack(missing: list[Package], dest: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        names = ", ".join(f"{p.name}@{p.version}" for p in missing)
        raise TailorError(f"the web export needs npm to fetch its browser runtime ({names}) and npm is not installed",
                          where="--format web", fix=NPM_FIX)
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [npm, "pack", *(f"{p.name}@{p.version}" for p in missing), "--pack-destination", str(dest), "--silent"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired as e:
        raise TailorError("`npm pack` did not finish within 10 minutes", where=" ".join(cmd),
                          fix="check the network connection to the npm registry (or npm's proxy settings)") from e
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise TailorError(f"`npm pack` failed (exit {proc.returncode}): " + " / ".join(tail), where=" ".join(cmd),
                          fix="check that the npm registry is reachable (`npm ping`) and npm's proxy settings")


def fetch() -> dict[str, Path]:
    """{package name: verified tarball}, downloading the ones not yet in the cache."""
    cache = cache_dir()
    missing = [p for p in PACKAGES if not (cache / p.tarball).is_file()]
    if missing:
        cache.mkdir(parents=True, exist_ok=True)
        # npm writes into a private folder first: an interrupted download or another export running at the same
        # time never leaves a partial tarball under the name the cache is read by
        with tempfile.TemporaryDirectory(dir=cache, prefix=".npm-pack-") as tmp:
            _npm_pack(missing, Path(tmp))
            for p in missing:
                if (Path(tmp) / p.tarball).is_file():
                    os.replace(Path(tmp) / p.tarball, cache / p.tarball)
    out = {}
    for p in PACKAGES:
        path = cache / p.tarball
        if not path.is_file():
            raise TailorError(f"`npm pack` wrote no {p.tarball}", where=str(cache), fix="run the export again")
        got = _integrity(path)
        if got != p.integrity:
            path.unlink()  # a corrupt or substituted download is never used, and is fetched afresh next time
            raise TailorError(f"{path} does not match the pinned integrity of {p.name}@{p.version} ({got[:30]}...)",
                              where=str(path), fix="export again to download it afresh; if it fails again, check "
                              "the npm registry configured (`npm config get registry`)")
        out[p.name] = path
    return out


def install(dest: Path) -> list[dict]:
    """Copy the runtime files into `dest` (OUT/runtime); returns what was copied, for the manifest."""
    dest.mkdir(parents=True, exist_ok=True)
    tarballs = fetch()
    copied = []
    for p in PACKAGES:
        wanted = dict(p.files)
        with tarfile.open(tarballs[p.name], "r:gz") as tar:
            for member in tar:  # one pass: seeking back in a gzip stream would decompress it again
                if member.name in wanted and member.isfile():
                    (dest / wanted.pop(member.name)).write_bytes(tar.extractfile(member).read())
        if wanted:
            raise TailorError(f"{', '.join(wanted)} missing from {tarballs[p.name]}", where=str(tarballs[p.name]),
                              fix=f"delete it and export again (pinned: {p.name}@{p.version})")
        copied.append({"package": p.name, "version": p.version, "license": p.license, "integrity": p.integrity,
                       "files": [name for _, name in p.files]})
    notice = ["The browser runtime of this page, fetched from the npm registry at export time:", ""]
    notice += [f"- {c['package']} {c['version']} ({c['license']}): {', '.join(c['files'])}" for c in copied]
    notice += ["", "onnxruntime-web: https://github.com/microsoft/onnxruntime (MIT, Copyright (c) Microsoft Corporation)",
               "@huggingface/tokenizers: https://github.com/huggingface/tokenizers.js (Apache-2.0, see LICENSE-tokenizers.txt)",
               "@huggingface/jinja: https://github.com/huggingface/huggingface.js (MIT, Copyright (c) Hugging Face)"]
    (dest / "NOTICE.txt").write_text("\n".join(notice) + "\n", encoding="utf-8")
    return copied
