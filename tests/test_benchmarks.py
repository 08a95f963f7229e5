"""Benchmarks are scripts (no timed tests): here they only have to run at tiny sizes and agree."""

import json
import subprocess
import sys

from conftest import REPO


def test_par_benchmark_runs_and_both_ways_agree():
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "par.py"), "--quick"], capture_output=True,
                         text=True, check=True, timeout=300).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["stage"] == "PAR" and result["size"] == 64
    assert result["max_abs_difference"] < 1e-4
    for way in ("published", "atsg"):
        assert result[way]["seconds"] > 0 and result[way]["peak_mb"] >= 0
