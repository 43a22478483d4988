"""Benchmark harness: ``nnunet-ext benchmark run SPEC`` turns a YAML study (datasets, rows, folds, seeds, metrics,
baseline, table layout) into resumable jobs that run nnU-Net's real commands, and ``nnunet-ext benchmark report DIR``
turns the finished jobs into a table with bootstrap confidence intervals, paired tests and plots.

Modules, in pipeline order:

- :mod:`~nnunet_ext.benchmark.spec`: the YAML schema and its validation (errors name the key path);
- :mod:`~nnunet_ext.benchmark.datasets`: writing, converting or linking datasets and planning them, once per study;
- :mod:`~nnunet_ext.benchmark.jobs`: rows x folds x seeds -> jobs with keys, the resume rule, running one job;
- :mod:`~nnunet_ext.benchmark.executors`: local (sequential or ``--jobs N``) and SLURM (submitit) execution;
- :mod:`~nnunet_ext.benchmark.stats`: bootstrap CIs, paired differences, Wilcoxon, seed aggregation;
- :mod:`~nnunet_ext.benchmark.report`: markdown/CSV/JSON tables, provenance, plots;
- :mod:`~nnunet_ext.benchmark.cli`: the ``benchmark`` verb;
- :mod:`~nnunet_ext.benchmark.timing`: time and peak-memory helpers for the speed/cost command rows (one fresh
  process per measured model: FFPN speed, DCA cost).

The schema and the statistical conventions are documented in ``benchmarks/README.md``.
"""
