"""``nnunet-ext benchmark``: ``run SPEC`` (datasets -> jobs -> report) and ``report DIR`` (tables, statistics, plots
and provenance from a study's finished jobs; can be rerun alone). The spec schema is in ``benchmarks/README.md``."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def configure_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    run = sub.add_parser("run", help="run (or resume) a benchmark spec and write its report",
                         description="Run every job of SPEC that is not already finished with the same key "
                                     "(row, fold, seed, dataset fingerprint, commit, device), then write the "
                                     "report.")
    run.add_argument("spec", metavar="SPEC", help="YAML benchmark spec (schema: benchmarks/README.md)")
    run.add_argument("--workdir", default=None,
                     help="study workspace for datasets and jobs (default workspace/benchmarks/<name>)")
    run.add_argument("--results", default=None,
                     help="report folder (default: the repository's benchmarks/results)")
    run.add_argument("--executor", default="local", choices=["local", "slurm", "submitit-local"],
                     help="local: this machine; slurm: job arrays through submitit; submitit-local: submitit's "
                          "local executor (testing)")
    run.add_argument("--jobs", type=int, default=1, help="local executor: concurrent jobs sharing the cores")
    run.add_argument("-device", default=None,
                     help="cpu, cuda or mps for nnU-Net's commands (default: the spec's, else cuda if available)")
    run.add_argument("--partition", default=None, help="SLURM partition (overrides the spec's slurm.partition)")
    run.add_argument("--time", type=int, default=None, dest="time_min", metavar="MINUTES",
                     help="SLURM time limit per job in minutes")
    run.add_argument("--gpus", type=int, default=None, dest="gpus_per_node", help="SLURM GPUs per job")
    run.add_argument("--cpus", type=int, default=None, dest="cpus_per_task", help="SLURM CPUs per job")
    run.add_argument("--mem_gb", type=float, default=None, help="SLURM memory per job (GB)")
    run.add_argument("--dry_run", action="store_true", help="list the jobs and whether each would run; change "
                                                            "nothing but the datasets")
    run.add_argument("--no_progress", action="store_true", help="no progress bar")
    report = sub.add_parser("report", help="write the report of a study workdir (rerunnable alone)")
    report.add_argument("workdir", metavar="DIR", help="the study's --workdir")
    report.add_argument("--results", default=None, help="report folder (default: the one of the last run)")


def run(args: argparse.Namespace) -> int:
    from nnunet_ext.errors import UserInputError

    invocation = shlex.join(["nnunet-ext", "benchmark", *sys.argv[2:]]) if Path(sys.argv[0]).name == "nnunet-ext" \
        else None
    if args.action == "report":
        from nnunet_ext.benchmark.report import build_report

        if not Path(args.workdir).is_dir():
            raise UserInputError(f"benchmark workdir not found: {args.workdir}")
        data = build_report(args.workdir, args.results, command=invocation)
        failed = [j for j in data["jobs"] if j["status"] != "finished"]
        print(f"wrote the report of {data['name']} ({len(data['jobs']) - len(failed)}/{len(data['jobs'])} jobs "
              f"finished)")
        return 0
    from nnunet_ext.benchmark.spec import load_spec
    from nnunet_ext.benchmark.study import run_study

    if args.jobs < 1:
        raise UserInputError(f"--jobs must be >= 1, got {args.jobs}")
    if args.executor != "local" and args.jobs != 1:
        raise UserInputError("--jobs applies to --executor local only (SLURM runs the jobs as an array)")
    for flag, value in (("--time", args.time_min), ("--gpus", args.gpus_per_node), ("--cpus", args.cpus_per_task),
                        ("--mem_gb", args.mem_gb)):
        if value is not None and value < (0 if flag == "--gpus" else 1):
            raise UserInputError(f"{flag} must be positive, got {value}")
    spec = load_spec(args.spec)
    slurm = {"partition": args.partition, "time_min": args.time_min, "gpus_per_node": args.gpus_per_node,
             "cpus_per_task": args.cpus_per_task, "mem_gb": args.mem_gb}
    result = run_study(spec, args.workdir, args.results, args.executor, args.jobs, args.device, slurm,
                       invocation=invocation, progress=not args.no_progress, dry_run=args.dry_run)
    return 1 if result.get("failed") else 0
