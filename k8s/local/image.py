#!/usr/bin/env python3
"""Assembles the lab's image without Docker, as a docker-archive tarball, and imports it into
the local cluster's containerd (`make image-local`; `kind load` does the same on kind).

    image.py build  [--bin-dir target/release] [--out target/image/frlab-dev.tar] [--tag frlab:dev]
    image.py pause  --pause /opt/frlab-k8s/bin/pause --out PAUSE.tar
    image.py import ARCHIVE.tar        (into $K8S_RUN/containerd, namespace k8s.io)
    image.py list                      (the binaries the image ships, one a line)

`build` makes what the Dockerfile's run stage makes (gcr.io/distroless/cc-debian12:nonroot
plus the release binaries): every binary of BINARIES in /usr/local/bin, and what they need
at run time — the program interpreter and every shared library `ldd` names (glibc, libgcc_s,
...), copied from this machine — plus CA certificates, /etc/passwd and /etc/group with the
user nonroot (65532), /tmp and /home/nonroot. User 65532:65532, entrypoint frlab --help.
Every entry has owner 0 and time 0, in a fixed order: the same files give the same image.
"""

import argparse
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile

# The binaries of the image: the Dockerfile's `for bin in ...` copy loop ships the same
# (a test in libs/values checks both against the workspace's binaries).
BINARIES = [
    "gateway",
    "orders",
    "payments",
    "inventory",
    "notifications",
    "chaos-controller",
    "frlab",
    "health-probe",
]

UID = 65532
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
PASSWD = (
    "root:x:0:0:root:/root:/sbin/nologin\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
    f"nonroot:x:{UID}:{UID}:nonroot:/home/nonroot:/sbin/nologin\n"
)
GROUP = f"root:x:0:\nnobody:x:65534:\nnonroot:x:{UID}:\n"


def fail(message):
    sys.exit(f"error: image.py: {message}")


def runtime_files(binary):
    """The program interpreter and the shared libraries `ldd` resolves for `binary`."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True)
    if out.returncode != 0:
        text = (out.stdout + out.stderr).strip()
        if "not a dynamic executable" in text:
            return []
        fail(f"ldd {binary}: {text}")
    files = []
    for line in out.stdout.splitlines():
        line = line.strip()
        if "=> not found" in line:
            fail(f"{binary} needs {line.split()[0]}, which this machine lacks")
        m = re.match(r"^\S+ => (/\S+) \(0x[0-9a-f]+\)$", line) or re.match(r"^(/\S+) \(0x[0-9a-f]+\)$", line)
        if m:
            files.append(m.group(1))
    return files


class Layer:
    """One image layer: a tar of directories and files, owner 0, time 0."""

    def __init__(self):
        self.entries = {}  # path in the image (no leading /) -> (kind, mode, data)

    def dir(self, path, mode=0o755, uid=0):
        path = path.strip("/")
        parent = os.path.dirname(path)
        if parent:
            self.dir(parent)
        if path not in self.entries:
            self.entries[path] = ("dir", mode, uid)

    def file(self, path, data, mode=0o644):
        path = path.strip("/")
        self.dir(os.path.dirname(path))
        self.entries[path] = ("file", mode, data)

    def host_file(self, dest, src, mode=None):
        with open(src, "rb") as f:  # follows symlinks: the image gets the real bytes
            data = f.read()
        self.file(dest, data, mode if mode is not None else (os.stat(src).st_mode & 0o777))

    def tar(self):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
            for path in sorted(self.entries):
                kind, mode, extra = self.entries[path]
                info = tarfile.TarInfo(path)
                info.mtime = 0
                info.mode = mode
                info.uid = info.gid = extra if kind == "dir" else 0
                if kind == "dir":
                    info.type = tarfile.DIRTYPE
                    t.addfile(info)
                else:
                    info.size = len(extra)
                    t.addfile(info, io.BytesIO(extra))
        return buf.getvalue()


def write_archive(out, tag, layer, config):
    """A docker-archive (what `docker save` writes; containerd imports it) of one layer."""
    blob = layer.tar()
    layer_sha = hashlib.sha256(blob).hexdigest()
    cfg = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": "1970-01-01T00:00:00Z",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + layer_sha]},
            "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "k8s/local/image.py"}],
        },
        sort_keys=True,
    ).encode()
    cfg_sha = hashlib.sha256(cfg).hexdigest()
    manifest = json.dumps(
        [{"Config": cfg_sha + ".json", "RepoTags": [tag], "Layers": [layer_sha + "/layer.tar"]}]
    ).encode()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + ".tmp"
    with tarfile.open(tmp, "w") as t:
        for name, data in ((cfg_sha + ".json", cfg), (layer_sha + "/layer.tar", blob), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            t.addfile(info, io.BytesIO(data))
    os.replace(tmp, out)
    return cfg_sha


def build(args):
    layer = Layer()
    libs = set()
    for name in BINARIES:
        src = os.path.join(args.bin_dir, name)
        if not os.path.isfile(src):
            fail(f"{src} is missing: build the release binaries first (cargo build --release --workspace --bins)")
        layer.host_file(f"usr/local/bin/{name}", src, 0o755)
        libs.update(runtime_files(src))
    for lib in sorted(libs):
        layer.host_file(lib, lib)
    if not os.path.isfile(CA_BUNDLE):
        fail(f"{CA_BUNDLE} is missing (Debian package ca-certificates)")
    layer.host_file(CA_BUNDLE, CA_BUNDLE, 0o644)
    layer.file("etc/passwd", PASSWD.encode())
    layer.file("etc/group", GROUP.encode())
    layer.dir("tmp", 0o1777)
    layer.dir("home/nonroot", 0o700, UID)
    config = {
        "User": f"{UID}:{UID}",
        "Entrypoint": ["/usr/local/bin/frlab"],
        "Cmd": ["--help"],
        "Env": [
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            f"SSL_CERT_FILE={CA_BUNDLE}",
        ],
        "WorkingDir": "/home/nonroot",
    }
    digest = write_archive(args.out, args.tag, layer, config)
    size = os.path.getsize(args.out) / 1e6
    print(f"{args.out}: {args.tag} (image id sha256:{digest[:12]}, {size:.0f} MB, "
          f"{len(BINARIES)} binaries, {len(libs)} runtime files)")


def pause(args):
    layer = Layer()
    layer.host_file("pause", args.pause, 0o755)
    write_archive(args.out, args.tag, layer, {"Entrypoint": ["/pause"], "Env": ["PATH=/"]})


def import_archive(args):
    sock = os.path.join(os.environ.get("K8S_RUN", "/tmp/frlab-k8s"), "containerd", "containerd.sock")
    if not os.path.exists(sock):
        fail(f"no containerd socket at {sock}: start the local cluster first (make cluster-local)")
    if not os.path.isfile(args.archive):
        fail(f"{args.archive} is missing: make image-archive builds it")
    out = subprocess.run(
        ["ctr", "-a", sock, "-n", "k8s.io", "images", "import", args.archive],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        fail(f"ctr images import {args.archive}: {(out.stdout + out.stderr).strip()}")
    print(out.stdout.strip() or f"imported {args.archive}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="the lab's image from the release binaries")
    b.add_argument("--bin-dir", default="target/release")
    b.add_argument("--out", default="target/image/frlab-dev.tar")
    b.add_argument("--tag", default="frlab:dev")
    b.set_defaults(run=build)
    s = sub.add_parser("pause", help="the pod sandbox image from the static pause binary")
    s.add_argument("--pause", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--tag", default="registry.k8s.io/pause:3.2-frlab")
    s.set_defaults(run=pause)
    i = sub.add_parser("import", help="into the local cluster's containerd (namespace k8s.io)")
    i.add_argument("archive")
    i.set_defaults(run=import_archive)
    sub.add_parser("list", help="the binaries the image ships").set_defaults(run=lambda _: print("\n".join(BINARIES)))
    args = p.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
