"""Foundation benchmark: wall time of ``make demo`` (after set-up) and of ``make test`` on a clean clone.

    python benchmarks/foundation.py            # both (the clean clone goes to a temp folder)
    python benchmarks/foundation.py --skip_test

Writes benchmarks/results/demo.json (demo_seconds, demo_dice, test_seconds) and demo.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results"


def timed(cmd: list[str], cwd: Path, log: Path) -> tuple[float, str]:
    start = time.time()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    seconds = time.time() - start
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd} (exit {proc.returncode}); log: {log}")
    return seconds, proc.stdout


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--skip_test", action="store_true", help="only time the demo (keep test_seconds from the file)")
    p.add_argument("--skip_demo", action="store_true", help="only time the tests (keep the demo figures)")
    args = p.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    previous = json.loads((OUT / "demo.json").read_text()) if (OUT / "demo.json").exists() else {}
    logs = Path(tempfile.mkdtemp(prefix="nnunet_ext_bench_"))

    result = {k: previous.get(k) for k in ("demo_seconds", "demo_dice", "test_seconds")}
    if not args.skip_demo:
        subprocess.run(["make", "setup"], cwd=REPO, check=True, capture_output=True)
        demo_s, out = timed(["make", "demo"], REPO, logs / "demo.log")
        dice = float(re.search(r"mean foreground Dice: ([0-9.]+)", out).group(1))
        result.update(demo_seconds=round(demo_s, 1), demo_dice=round(dice, 4))
    if not args.skip_test:
        clone = logs / "clone"
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        # CI clones with ../shared beside the repository; link it so the real-data tests run too
        shared = REPO.parent / "shared"
        if shared.exists() and not (logs / "shared").exists():
            os.symlink(shared, logs / "shared")
        test_s, test_out = timed(["make", "test"], clone, logs / "test.log")
        result["test_seconds"] = round(test_s, 1)
        result["test_summary"] = [l for l in test_out.splitlines() if re.search(r"\d+ passed", l)][-1].strip("= ")
        shutil.rmtree(clone / ".venv", ignore_errors=True)
    (OUT / "demo.json").write_text(json.dumps(result, indent=2) + "\n")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    lines = ["# Foundation: demo and test wall times", "",
             f"- commands: `make demo` (after `make setup`), `git clone . CLONE && cd CLONE && make test` "
             f"(includes creating .venv and installing); script: `python benchmarks/foundation.py`",
             f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores, no GPU, Python {platform.python_version()}",
             f"- date: {date.today().isoformat()}, commit {commit}", "",
             "| measure | value | target |", "|---|---|---|",
             f"| `make demo` wall time (s) | {result['demo_seconds']} | < 300 |",
             f"| demo mean foreground Dice (breast_dce test cases) | {result['demo_dice']} | printed |",
             f"| `make test` wall time on a clean clone (s) | {result['test_seconds']} | < 900 |"]
    if result.get("test_summary"):
        lines.append(f"\npytest: {result['test_summary']}")
    (OUT / "demo.md").write_text("\n".join(lines) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
