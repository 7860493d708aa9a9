"""The Ultralytics backend never reaches for the network nor runs pip, even when the offline variables are unset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

PROBE = textwrap.dedent(
    """
    import json, socket, subprocess, sys
    attempts = []
    _connect, _getaddrinfo, _popen = socket.socket.connect, socket.getaddrinfo, subprocess.Popen.__init__

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(["connect", str(address)])
        return _connect(self, address)

    def getaddrinfo(host, *args, **kwargs):
        attempts.append(["dns", str(host)])
        return _getaddrinfo(host, *args, **kwargs)

    def popen(self, args, *rest, **kwargs):
        attempts.append(["process", str(args)])
        return _popen(self, args, *rest, **kwargs)

    socket.socket.connect, socket.getaddrinfo, subprocess.Popen.__init__ = connect, getaddrinfo, popen

    from aisemble.hosting.backend import RequestContext, create_backend
    from aisemble.config.models import load_models
    from aisemble.inputs.images import ImageLimits, decode_image
    from aisemble.store.model_store import ModelStore, default_store_root
    from services.vision.types import DetectionRequest
    from tests.assets.pictures import bus_jpg

    backend = create_backend(load_models()["yolov8-fall-ultralytics"], ModelStore(default_store_root()))
    backend.load()
    image = decode_image(bus_jpg(), ImageLimits())
    result = backend.run(DetectionRequest(image, backend.defaults), RequestContext())
    print(json.dumps({"attempts": attempts, "people": len(result.detections)}))
    """
)


def test_ultralytics_backend_stays_offline(tmp_path):
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("YOLO_")}
    env["YOLO_CONFIG_DIR"] = str(tmp_path)  # a fresh settings folder: first-run code paths run too
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=root, env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["people"] >= 3
    network = [a for a in report["attempts"] if a[0] != "process"]
    installs = [a for a in report["attempts"] if a[0] == "process" and ("pip" in a[1] or "install" in a[1])]
    assert network == [] and installs == [], report["attempts"]  # (ctypes runs `ldconfig -p`: harmless)
