import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_parameter_count_and_clip_flops_of_a_config():
    cmd = [sys.executable, str(ROOT / "tools" / "analyze_model.py"), "--config-file",
           str(ROOT / "configs" / "synthetic" / "tiny.yaml"), "--tasks", "parameter", "flop"]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    params = int(re.search(r"parameters: ([\d,]+)", result.stdout).group(1).replace(",", ""))
    assert 1e6 < params < 5e7
    gflops = float(re.search(r"clip of 2 frames at 64x114: ([\d.]+) GFLOPs", result.stdout).group(1))
    assert gflops > 0
