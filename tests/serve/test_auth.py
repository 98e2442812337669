"""The serve key: from the environment or a file (never on the command line), the scheme case-insensitive,
the playground page open as ``--help`` says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from .conftest import Server

KEY = "s3cret-key"


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def _check_auth(srv: Server) -> None:
    assert KEY not in _cmdline(srv.proc.pid)  # what `ps` shows every user of the machine
    models = srv.url + "/v1/models"
    assert httpx.get(models).status_code == 401
    assert httpx.get(models, headers={"Authorization": "Bearer wrong"}).status_code == 401
    for scheme in ("Bearer", "bearer", "BEARER"):  # RFC 7235: the scheme is case-insensitive
        assert httpx.get(models, headers={"Authorization": f"{scheme} {KEY}"}).status_code == 200, scheme
    assert httpx.get(srv.url + "/health").status_code == 200
    page = httpx.get(srv.url + "/")  # the static page is open, as --help says; it asks for the key
    assert page.status_code == 200 and "<html" in page.text.lower()


def test_key_from_the_environment_or_a_file(model_dirs, tmp_path):
    spec = [f"ngram={model_dirs['ngram']}"]
    srv = Server(spec, api_key=None, env={"ARLM_API_KEY": KEY})
    try:
        _check_auth(srv)
    finally:
        srv.stop()
    (tmp_path / "key").write_text(KEY + "\n")
    srv = Server(spec, api_key=None, extra=["--api-key-file", str(tmp_path / "key")])
    try:
        _check_auth(srv)
    finally:
        srv.stop()


def test_bad_keys_are_refused_in_one_line_and_help_says_what_is_open(model_dirs, tmp_path):
    (tmp_path / "empty").write_text("\n")
    for extra in (["--api-key", "a", "--api-key-file", str(tmp_path / "empty")], ["--api-key-file", str(tmp_path / "empty")],
                  ["--api-key-file", str(tmp_path / "missing")], ["--api-key", "two words"]):
        r = subprocess.run([sys.executable, "-m", "arlm", "serve", str(model_dirs["ngram"]), "--port", "1", *extra],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "key" in r.stderr, (extra, r.stderr)
    h = subprocess.run([sys.executable, "-m", "arlm", "serve", "--help"], capture_output=True, text=True).stdout
    h = " ".join(h.split())
    assert "but /health and the playground page /" in h and "ARLM_API_KEY" in h and "safer" in h
