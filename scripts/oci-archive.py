#!/usr/bin/env python3
"""One-layer OCI image archive (loads with `ctr -n k8s.io images import`) from a root file system directory,
without Docker; used by scripts/local-cluster.sh for the sandbox (pause) and e2e client images.
usage: oci-archive.py REF ROOTFS OUT.tar [--entrypoint JSON] [--cmd JSON] [--user UID:GID]"""
import argparse
import hashlib
import io
import json
import os
import platform
import tarfile

ap = argparse.ArgumentParser()
ap.add_argument("ref")
ap.add_argument("rootfs")
ap.add_argument("out")
ap.add_argument("--entrypoint")
ap.add_argument("--cmd")
ap.add_argument("--user")
args = ap.parse_args()
# The image holds binaries of this machine.
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def add_blob(archive, data):
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo("blobs/sha256/" + digest)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))
    return "sha256:" + digest


def add_file(archive, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


# The layer: the root file system owned by root, timestamps zeroed so the same input gives the same digest.
layer_buf = io.BytesIO()
with tarfile.open(fileobj=layer_buf, mode="w", format=tarfile.PAX_FORMAT) as layer_tar:
    for parent, dirs, files in os.walk(args.rootfs):
        dirs.sort()
        files.sort()
        for name in dirs + files:
            path = os.path.join(parent, name)
            info = layer_tar.gettarinfo(path, os.path.relpath(path, args.rootfs))
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            if info.isfile():
                with open(path, "rb") as f:
                    layer_tar.addfile(info, f)
            else:
                layer_tar.addfile(info)
layer = layer_buf.getvalue()

config = {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}
if args.entrypoint:
    config["Entrypoint"] = json.loads(args.entrypoint)
if args.cmd:
    config["Cmd"] = json.loads(args.cmd)
if args.user:
    config["User"] = args.user

with tarfile.open(args.out, "w") as out:
    layer_digest = add_blob(out, layer)
    image_config = json.dumps({
        "architecture": ARCH, "os": "linux", "created": "1970-01-01T00:00:00Z", "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }).encode()
    config_digest = add_blob(out, image_config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                   "size": len(image_config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest,
                    "size": len(layer)}],
    }).encode()
    manifest_digest = add_blob(out, manifest)
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
        "size": len(manifest), "platform": {"architecture": ARCH, "os": "linux"},
        "annotations": {"io.containerd.image.name": args.ref,
                        "org.opencontainers.image.ref.name": args.ref.rsplit(":", 1)[1]},
    }]}).encode()
    add_file(out, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    add_file(out, "index.json", index)
print(args.ref, manifest_digest)
