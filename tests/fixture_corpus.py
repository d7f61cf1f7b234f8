"""A small corpus written for the tests: npm-style tarballs and a real .deb, placed in a fetch
cache so the whole pipeline runs offline. Each file is made to trigger one filter or one case."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path


def js_module(name: str, extra: str = "") -> str:
    """A plausible JS module with enough distinct identifiers for near-duplicate detection."""
    words = [f"{name}{part}" for part in ("Alpha", "Beta", "Gamma", "Delta", "Epsilon", "Zeta", "Eta", "Theta")]
    body = "\n".join(f"  const {w} = compute{w}(input, {i});" for i, w in enumerate(words))
    return f"function {name}(input) {{\n{body}\n  return [{', '.join(words)}];\n}}\n{extra}module.exports = {name};\n"


TEST_ORIGINAL = js_module("shared", "// the held-out copy\n")
NEAR_BASE = js_module("neighbour")

NPM_PACKAGES: dict[tuple[str, str], dict[str, bytes]] = {
    ("fx-core", "1.0.0"): {
        "lib/a.js": js_module("alpha").encode(),
        "lib/b.js": js_module("beta").encode(),
        "lib/copy.js": TEST_ORIGINAL.replace("  ", "    ").encode(),  # whitespace-only change
        "lib/near.js": NEAR_BASE.replace("return [", "const extra = 1;\n  return [").encode(),
        "lib/licensed.js": b"/*\n * Copyright 2020 Someone\n * Licensed under the MIT license.\n */\n"
        + js_module("licensed").encode(),
        "lib/minified.js": ("var a=" + "1+" * 700 + "1;").encode(),
        "lib/binary.js": b"var x = 1;\x00\x01\x02",
        "lib/latin1.js": "var caf\u00e9 = 'cr\u00e8me';".encode("latin-1"),
        "lib/huge.js": b"var big = 1;\n" * 3000,
        "lib/deep.js": b"var deep = " + b"[\n" * 700 + b"1" + b"]\n" * 700 + b";\n",
        "lib/broken.js": b"function ( { ]]] var = = ; class { ( \n" * 20 + b"var ok = 1;\n",
        "lib/generated.js": b"var _x = _interopRequireDefault(require('x'));\n",
        "lib/empty.js": b"\n\n",
        "dist/bundle.js": js_module("bundle").encode(),
        "README.md": b"# fx-core\n",
    },
    ("fx-near", "2.0.0"): {
        "src/neighbour.js": NEAR_BASE.encode(),
        "src/own.js": js_module("own").replace("\n", "\r\n").encode(),  # Windows line endings
    },
    ("fx-test", "0.1.0"): {
        "lib/shared.js": TEST_ORIGINAL.encode(),
        "lib/only_test.js": js_module("zzUniqueTestName").encode(),
    },
}

CPP_ROOT = "usr/share/doc/fx/examples"
CPP_FILES = {
    f"{lib}/{name}.cpp": (
        f"#include <vector>\nnamespace {lib} {{\nint {name}(std::vector<int> const& v) {{\n"
        f"  int total_{name} = 0;\n  for (int x : v) total_{name} += x * {i};\n  return total_{name};\n}}\n}}\n"
    ).encode()
    for i, (lib, name) in enumerate(
        [("alpha", "sum"), ("alpha", "scale"), ("beta", "count"), ("gamma", "reduce"), ("gamma", "fold")]
    )
}


def recipe(name: str = "fixture") -> dict:
    return {
        "name": name,
        "packages": [
            {"name": "fx-core", "registry": "npm", "version": "1.0.0", "language": "javascript", "split": "train",
             "include": ["**"]},
            {"name": "fx-near", "registry": "npm", "version": "2.0.0", "language": "javascript", "split": "valid",
             "include": ["src/**"]},
            {"name": "fx-test", "registry": "npm", "version": "0.1.0", "language": "javascript", "split": "test",
             "include": ["lib/**"]},
            {"name": "fx-cpp-examples", "registry": "deb", "version": "1.0-1", "language": "cpp", "split": "train",
             "root": CPP_ROOT, "include": ["**/*.cpp"], "project_depth": 1,
             "project_splits": {"valid": ["beta"], "test": ["gamma"]}},
        ],
    }  # fmt: skip


def _npm_tarball(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path, data in sorted(files.items()):
            info = tarfile.TarInfo("package/" + path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _deb(work: Path) -> bytes:
    root = work / "debroot"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: fx-cpp-examples\nVersion: 1.0-1\nArchitecture: all\nMaintainer: tests <t@example.org>\n"
        "Description: fixture examples\n"
    )
    for path, data in CPP_FILES.items():
        target = root / CPP_ROOT / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    out = work / "fx.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(out)], check=True, capture_output=True)
    return out.read_bytes()


def write_cache(cache_dir: Path, work: Path) -> None:
    """Put the fixture archives where `codecomp.data_prep.fetch` looks, as if fetched before."""
    archives = {("npm", f"{n}={v}.tgz", v): _npm_tarball(files) for (n, v), files in NPM_PACKAGES.items()}
    archives[("deb", "fx-cpp-examples=1.0-1.deb", "1.0-1")] = _deb(work)
    for (registry, file_name, version), data in archives.items():
        folder = cache_dir / registry
        folder.mkdir(parents=True, exist_ok=True)
        (folder / file_name).write_bytes(data)
        record = {"version": version, "sha256": hashlib.sha256(data).hexdigest()}
        (folder / file_name).with_suffix(".json").write_text(json.dumps(record))
