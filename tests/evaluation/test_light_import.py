"""The metric code imports without torch and detectron2 (issue 13: light imports)."""

from __future__ import annotations

import subprocess
import sys

# A meta-path finder that makes torch and detectron2 unimportable, as on a machine without them.
_BLOCK = """
import sys
class _Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "detectron2", "torchvision"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None
sys.meta_path.insert(0, _Refuse())
"""


def run_without_torch(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _BLOCK + code], capture_output=True, text=True)


def test_blocker_makes_torch_unimportable():
    out = run_without_torch("import torch")
    assert out.returncode != 0 and "blocked by the test" in out.stderr


def test_metric_modules_import_without_torch_or_detectron2():
    out = run_without_torch(
        "import mdqe.evaluation.ytvis_metrics, mdqe.evaluation.analysis, mdqe.evaluation.breakdown\n"
        "import mdqe.evaluation.occlusion, mdqe.evaluation.report\n"
        "from mdqe.evaluation import evaluate_ytvis, analyze_ytvis\n"
        "print(sorted(m for m in ('torch', 'detectron2') if m in sys.modules))\n"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_import_mdqe_without_torch_registers_nothing_and_says_why_on_use():
    out = run_without_torch(
        "import mdqe, mdqe.evaluation\n"
        "try:\n"
        "    mdqe.evaluation.YTVISEvaluator\n"
        "except ImportError as e:\n"
        "    print('ImportError', e.name)\n"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "ImportError"
