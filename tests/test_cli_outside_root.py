"""`ray start --head` on 127.0.0.1, then `python /path/to/launch/demo.py` from another folder: the
workers must find facelive's code without the repository on their path (actors/cluster.py ships
it as py_modules), and TensorFlow's start-up chatter stays out of the console."""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import cut_clip

ROOT = Path(__file__).resolve().parent.parent
RAY = Path(sys.executable).with_name("ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, head: subprocess.Popen, deadline_s: float) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        assert head.poll() is None, f"ray start exited with {head.returncode}"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    pytest.fail(f"ray start --head did not listen on 127.0.0.1:{port} within {deadline_s} s")


def stop_head(head: subprocess.Popen, temp_dir: str) -> None:
    """Stops this test's head only (`ray stop` would stop every Ray on the machine): `ray start
    --block` takes its processes down on SIGTERM; any it leaves are found by their temp dir."""
    head.send_signal(signal.SIGTERM)
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        head.kill()
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if any(temp_dir in part for part in proc.info["cmdline"] or ()):
            proc.kill()


@pytest.mark.ray
def test_demo_runs_from_outside_the_repository_against_ray_start(tmp_path):
    temp_dir = tempfile.mkdtemp(prefix="flhead-", dir="/tmp")  # socket paths are limited to 107 bytes
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS", "RAY_TMPDIR")}
    env.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    port = free_port()
    head = subprocess.Popen([str(RAY), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
                             "--num-cpus=2", f"--object-store-memory={400 * 2**20}", "--include-dashboard=false",
                             f"--temp-dir={temp_dir}"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, head, 120)
        clip = cut_clip(tmp_path / "clip.mp4", 12, start=100)  # faces enter from frame 52
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        run = subprocess.run([sys.executable, str(ROOT / "launch" / "demo.py"), "--source", clip, "--out", "out"],
                             cwd=elsewhere, env={**env, "RAY_ADDRESS": f"127.0.0.1:{port}"},
                             capture_output=True, text=True, timeout=540)
        console = run.stdout + run.stderr
        assert run.returncode == 0, console[-4000:]
        assert "joined the Ray cluster at 127.0.0.1" in console
        summary = json.loads((elsewhere / "out" / "summary.json").read_text())
        assert summary["frames"]["captured"] == summary["frames"]["processed"] == 12
        assert summary["faces"] > 0
        for noise in ("oneDNN custom operations", "absl::InitializeLog"):
            assert noise not in console, console[-4000:]
    finally:
        stop_head(head, temp_dir)


def test_workers_get_the_code_and_quiet_tensorflow_unless_verbose():
    from actors.cluster import PACKAGES, runtime_env

    quiet, verbose = runtime_env(), runtime_env(verbose=True)
    assert quiet["py_modules"] == verbose["py_modules"] == [str(ROOT / name) for name in PACKAGES]
    assert all((Path(p) / "__init__.py").exists() for p in quiet["py_modules"])
    assert quiet["worker_process_setup_hook"] == "actors.cluster.quiet_tensorflow_import"
    assert "worker_process_setup_hook" not in verbose and "TF_CPP_MIN_LOG_LEVEL" not in verbose["env_vars"]


@pytest.mark.parametrize("hook, shown", [(True, False), (False, True)])
def test_the_setup_hook_mutes_tensorflows_import_only(hook, shown):
    code = ("import sys\n"
            + ("from actors.cluster import quiet_tensorflow_import\nquiet_tensorflow_import()\n" if hook else "")
            + "import tensorflow as tf\n"
            "print('after import', file=sys.stderr)\n")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    # what TensorFlow says at import depends on the CPU: oneDNN's notice where it runs oneDNN's
    # kernels, the CPU feature guard's where it could use more instructions than it was built for
    said = any(notice in run.stderr for notice in ("oneDNN custom operations", "cpu_feature_guard"))
    assert said == shown, run.stderr
    assert "after import" in run.stderr  # what comes after the import still reaches stderr
