"""A real ``arlm serve`` on 127.0.0.1 (free port) with a tiny n-gram and a tiny GPT, for the server tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch
from arlm.lm import LM
from arlm.vocab import CharVocab

NAMES = Path(__file__).resolve().parents[1] / "data" / "names.txt"

API_KEY = "test-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_models(root: Path) -> dict[str, Path]:
    """A 4-gram and a float32 1-layer GPT (block 16) on the names fixture, char vocab, saved as model dirs."""
    from arlm.data import encode_documents
    from arlm.models.gpt import GPTConfig, GPTModel
    from arlm.models.ngram import NGramConfig, NGramModel

    docs = NAMES.read_text(encoding="utf-8").split()[:2000]
    vocab = CharVocab.train(docs)
    out = {}
    ngram = NGramModel.fit(NGramConfig(vocab.vocab_size, vocab.bos_id, vocab.eos_id, order=4),
                           encode_documents(vocab, docs))
    out["ngram"] = LM(ngram, vocab, "lines").save(root / "ngram")
    torch.manual_seed(1)
    gpt = GPTModel(GPTConfig(vocab_size=vocab.vocab_size, bos_id=vocab.bos_id, eos_id=vocab.eos_id, n_layer=1,
                             n_head=2, n_embd=16, block_size=16)).eval()
    out["gpt"] = LM(gpt, vocab, "lines").save(root / "gpt")
    return out


class Server:
    """``arlm serve`` in a subprocess; ``stop()`` ends it."""

    def __init__(self, specs: list[str], api_key: str | None = API_KEY, extra: list[str] | None = None,
                 env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_key = api_key
        cmd = [sys.executable, "-m", "arlm", "serve", *specs, "--port", str(self.port), *(extra or [])]
        if api_key:
            cmd += ["--api-key", api_key]
        env = {**{k: v for k, v in os.environ.items() if k != "ARLM_API_KEY"}, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"arlm-serve-{self.port}.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        try:
            self._wait()
        except BaseException:
            self.stop()
            raise

    def _wait(self, timeout: float = 60.0) -> None:
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"arlm serve exited: {self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("arlm serve did not become ready")

    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        self.log_path.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    return make_models(tmp_path_factory.mktemp("serve-models"))


@pytest.fixture(scope="session")
def server(model_dirs):
    srv = Server([f"ngram={model_dirs['ngram']}", f"gpt={model_dirs['gpt']}"])
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def lms(model_dirs) -> dict[str, LM]:
    return {name: LM.load(path) for name, path in model_dirs.items()}
