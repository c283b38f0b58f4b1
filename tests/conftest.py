"""Shared fixtures: one tiny synthetic dataset per test session, and a config for it that trains in seconds."""
from __future__ import annotations

import json
import shutil
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tasks.handbone.synthetic import HAND_BONE_CLASSES, generate  # noqa: E402
from tests import system  # noqa: E402
from utils.config import load_config  # noqa: E402


@pytest.fixture(scope="session")
def chromium() -> Path:
    """The headless browser of the report tests; missing: a skip naming the package (SEG_REQUIRE_SYSTEM: a
    failure). Session-scoped and listed first, so that a skip comes before the test's data work."""
    return system.chromium()


@pytest.fixture(scope="session")
def postgres_bin() -> Path:
    """The folder of initdb, pg_ctl and postgres (any version); missing: as for `chromium`."""
    return system.postgres_bin()


@pytest.fixture(scope="session")
def dataset_root(tmp_path_factory) -> Path:
    """6 persons (12 train images) and 2 test persons at 128 px."""
    return generate(tmp_path_factory.mktemp("data") / "hands", ids=6, test_ids=2, size=128, seed=3, progress=False)


@pytest.fixture
def dataset_copy(dataset_root, tmp_path) -> Path:
    """A private copy for tests that break or modify files."""
    return Path(shutil.copytree(dataset_root, tmp_path / "hands"))


@pytest.fixture
def classes() -> list[str]:
    return list(HAND_BONE_CLASSES)


def tiny_overrides(root: Path, cache: Path) -> list[str]:
    return [f"data.root={root}", f"data.cache_dir={cache}", "data.image_size=64", "data.batch_size=4",
            "data.val_batch_size=2", "data.num_workers=0", "data.cache_workers=1", "data.n_splits=3",
            "model.arch=Unet", "model.encoder=resnet18", "model.params={encoder_depth: 3, decoder_channels: [32, 16, 8]}",
            "trainer.epochs=2", "trainer.val_every=1", "optimizer.lr=1e-3", "transforms.gpu=[]"]


@pytest.fixture(scope="session")
def tiny_checkpoint(dataset_root, tmp_path_factory) -> Path:
    """best.pt of a one-epoch run on the tiny dataset."""
    from trainer.runtime import setup_runtime
    from trainer.trainer import Trainer

    tmp = tmp_path_factory.mktemp("run")
    cfg = load_config(ROOT / "configs" / "demo.yaml", tiny_overrides(dataset_root, tmp / "cache") + ["trainer.epochs=1"])
    Trainer(cfg, tmp / "run", setup_runtime(cfg.trainer), progress=False).fit()
    return tmp / "run" / "best.pt"


@pytest.fixture
def tiny_config(dataset_root, tmp_path):
    def make(*extra: str):
        return load_config(ROOT / "configs" / "demo.yaml", tiny_overrides(dataset_root, tmp_path / "cache") + list(extra))
    return make


SECRET = "http://127.0.0.1:{port}/hooks/T000-SECRET-TOKEN"


@pytest.fixture
def webhook():
    """A Slack stand-in on 127.0.0.1: collects the JSON bodies posted to it."""
    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield SECRET.format(port=server.server_port), received
    server.shutdown()


def files_containing(folder, text: str) -> list:
    needle = text.encode()
    return [p for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes()]
