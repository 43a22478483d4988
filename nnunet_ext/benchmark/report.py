"""``nnunet-ext benchmark report DIR``: the tables, statistics, plots and provenance of a study's finished jobs.

Reads ``DIR/study.json`` (the spec and the jobs of the last ``benchmark run``) and each job's ``job.json`` and
``summary.json``; writes ``<name>.md``, ``<name>.csv`` (one line per row, label and metric), ``<name>.json``
(``summary`` keys, ``commit``, rows, jobs, provenance), ``<name>.per_case.csv`` (every per-case value) and PNG plots
(``<name>_<metric>.png``: per-row box + strip plot; ``<name>_<metric>_paired.png``: paired differences against the
baseline) into the results folder. Only jobs whose ``job.json`` carries the key planned by that run count; failed,
stale and missing jobs are listed with their log paths. Statistics: :mod:`nnunet_ext.benchmark.stats`.
"""
from __future__ import annotations

import csv
import io
import json
import math
import operator
import re
from pathlib import Path

from nnunet_ext.benchmark import stats
from nnunet_ext.benchmark.jobs import FAILED, FINISHED, RUNNING, read_job_record
from nnunet_ext.benchmark.spec import METRICS, TARGET_KEY, Spec, lookup_spec, parse_spec
from nnunet_ext.errors import UserInputError
from nnunet_ext.jsonio import json_ready
from nnunet_ext.metrics.false_positives import FP_KEYS

STUDY_FILE = "study.json"
JOB_LABEL = "-"      # label of job-level metrics (timings, command-row metrics)
RUN_CASE = "run"     # case name of job-level metrics
MEAN_LABEL = "mean"  # per-case mean over the foreground labels


def load_study(workdir: str | Path) -> tuple[dict, Spec]:
    path = Path(workdir) / STUDY_FILE
    if not path.is_file():
        raise UserInputError(f"{workdir} is not a benchmark workdir (no {STUDY_FILE}; run 'nnunet-ext benchmark run "
                             f"SPEC' first)")
    study = json.loads(path.read_text())
    return study, parse_spec(study["spec"], study.get("spec_file"))


def collect_jobs(study: dict, workdir: Path) -> list[dict]:
    """Every planned job with its status: finished, failed, interrupted, stale, not run."""
    out = []
    status_by_id = {}
    for job in study["jobs"]:
        job_dir = workdir / "jobs" / job["id"]
        record = read_job_record(job_dir)
        entry = {**job, "dir": str(job_dir), "record": record}
        if record is None:
            blocked = [r for r in job["requires"] if status_by_id.get(r) not in (FINISHED, None)]
            entry["status"] = "not run" + (" (a required job did not finish)" if blocked else "")
        elif record.get("key") != job["key"]:
            entry["status"] = "stale (older key)"
        elif record.get("status") == RUNNING:
            entry["status"] = "interrupted"
            entry["log"] = str(job_dir / "job.log")
        else:
            entry["status"] = record.get("status")
            if entry["status"] == FAILED:
                entry["log"] = record.get("log")
                entry["error"] = record.get("error")
        status_by_id[job["id"]] = entry["status"]
        out.append(entry)
    return out


def per_case_records(jobs: list[dict]) -> list[dict]:
    """Long table of every value: row, seed, fold, case, label, metric, value (NaN = undefined)."""
    from nnunet_ext.metrics.evaluate import case_name

    records = []
    for job in jobs:
        if job["status"] != FINISHED:
            continue
        base = {"row": job["label"], "seed": job["seed"], "fold": job["fold"]}
        record = job["record"]
        per_case = record.get("per_case") or {}
        per_case_metrics = {m for values in per_case.values() for m in values}
        for metric, value in (record.get("metrics") or {}).items():
            if metric not in per_case_metrics:
                records.append({**base, "case": RUN_CASE, "label": JOB_LABEL, "metric": metric, "value": value})
        for case, values in per_case.items():
            for metric, value in values.items():
                records.append({**base, "case": case, "label": JOB_LABEL, "metric": metric, "value": value})
        # train and ensemble jobs evaluate into summary.json; a command row may write one too ({job_dir}/summary.json)
        summary_path = Path(job["dir"]) / "summary.json"
        if summary_path.is_file():
            summary = json.loads(summary_path.read_text())
            # a row evaluated by regions (``regions:``) reports its regions as its labels
            evaluated = summary["regions"]["metric_per_case"] if "regions" in summary else summary["metric_per_case"]
            for case in evaluated:
                name = case_name(case["reference_file"])
                for label, metrics in case["metrics"].items():
                    if label == MEAN_LABEL:
                        continue  # the report averages labels itself
                    for metric in METRICS:
                        value = metrics.get(metric)
                        records.append({**base, "case": name, "label": label, "metric": metric,
                                        "value": math.nan if value is None else float(value)})
            for name, figures in (summary.get("negative_scans") or {}).get("per_case", {}).items():
                for key in FP_KEYS:  # false positives of scans without reference foreground: FP_any, FP_ml, ...
                    records.append({**base, "case": name, "label": JOB_LABEL, "metric": key.replace("fp_", "FP_"),
                                    "value": float(figures[key])})
    return records


def _add_label_means(records: list[dict], labels: list[str]) -> list[dict]:
    """Per (row, seed, fold, case, metric): the NaN-ignoring mean over the foreground labels, label ``mean``."""
    groups: dict[tuple, list[float]] = {}
    for r in records:
        if r["label"] in labels:
            groups.setdefault((r["row"], r["seed"], str(r["fold"]), r["case"], r["metric"]), []).append(r["value"])
    extra = []
    for (row, seed, fold, case, metric), values in groups.items():
        x = stats.finite(values)
        extra.append({"row": row, "seed": seed, "fold": fold, "case": case, "label": MEAN_LABEL, "metric": metric,
                      "value": float(x.mean()) if x.size else math.nan})
    return records + extra


def analyse(spec: Spec, jobs: list[dict]) -> dict:
    """Statistics of every (row, label, metric): :func:`stats.describe` and paired comparisons with the baseline."""
    records = per_case_records(jobs)
    # numeric labels in order, then region names in the order they first appear
    found = list(dict.fromkeys(r["label"] for r in records if r["label"] not in (JOB_LABEL, "0")))
    found = sorted(found, key=lambda label: (0, int(label)) if label.isdigit() else (1, found.index(label)))
    labels = [str(label) for label in spec.labels] if spec.labels else found
    records = _add_label_means(records, labels)
    boot = spec.bootstrap
    table: dict[str, dict] = {}
    per_case_values: dict[tuple, dict[str, float]] = {}
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["row"], r["label"], r["metric"]), []).append(r)
    for (row, label, metric), items in groups.items():
        if label not in labels + [MEAN_LABEL, JOB_LABEL]:
            continue
        case_values = stats.case_means((r["case"], r["value"]) for r in items)
        seeds = {}
        for s in sorted({r["seed"] for r in items}):
            seeds[s] = stats.case_means((r["case"], r["value"]) for r in items if r["seed"] == s)
        per_case_values[(row, label, metric)] = case_values
        table.setdefault(row, {}).setdefault(label, {})[metric] = stats.describe(
            case_values, seeds, boot["confidence"], boot["n_resamples"], boot["seed"])
    paired: dict[str, dict] = {}
    # rows evaluated on another dataset's test cases share case names, not cases: never pair them
    datasets = {r.label: r.dataset for r in spec.rows}
    if spec.baseline:
        for (row, label, metric), values in per_case_values.items():
            base = per_case_values.get((spec.baseline, label, metric))
            if row == spec.baseline or base is None or label == JOB_LABEL:
                continue
            if None not in (datasets.get(row), datasets.get(spec.baseline)) and \
                    datasets[row] != datasets[spec.baseline]:
                continue
            comparison = stats.paired_comparison(values, base, boot["confidence"], boot["n_resamples"], boot["seed"])
            paired.setdefault(row, {}).setdefault(label, {})[metric] = comparison
    return {"labels": labels, "records": records, "table": table, "paired": paired, "per_case": per_case_values}


# --- summary keys ----------------------------------------------------------------------------------------------------

def _default_label(analysis: dict, row: str, metric: str) -> str:
    """Job-level metrics (timings, command-row metrics) have the label ``-``; evaluated metrics the only label,
    else the per-case mean over the labels."""
    if metric in analysis["table"].get(row, {}).get(JOB_LABEL, {}):
        return JOB_LABEL
    labels = analysis["labels"]
    return labels[0] if len(labels) == 1 else MEAN_LABEL


def _command_output(command: str) -> str | None:
    """Stripped standard output of a shell command run now (e.g. ``sbatch --version``); None if it fails."""
    import subprocess

    try:
        proc = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def target_met(conditions: list, figures: dict) -> bool | None:
    """True when every ``[KEY, OP, NUMBER]`` holds for the figures computed so far (``KEY[i]``: element i of a
    list figure such as a confidence interval); None when a figure is missing (a row without finished jobs)."""
    compare = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
    met = True
    for key, op, number in conditions:
        name, index = TARGET_KEY.fullmatch(str(key)).groups()
        value = figures.get(name)
        if value is not None and index is not None:
            value = value[int(index)] if isinstance(value, (list, tuple)) and len(value) > int(index) else None
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        met = met and compare[op](float(value), float(number))
    return bool(met)


def summary_values(spec: Spec, analysis: dict, jobs: list[dict]) -> dict:
    """The spec's ``summary`` figures (None where a row has no finished job)."""
    out = {}
    for key, entry in spec.summary.items():
        if "spec" in entry:
            out[key] = lookup_spec(spec.source, entry["spec"], f"summary.{key}.spec")
            continue
        if "command" in entry:
            out[key] = _command_output(entry["command"])
            continue
        if "target" in entry:
            out[key] = target_met(entry["target"], out)
            continue
        stat = entry["stat"]
        if "row" not in entry:
            if stat == "n_seeds":
                out[key] = len({j["seed"] for j in jobs if j["status"] == FINISHED})
            elif stat == "n_jobs":
                out[key] = len(jobs)
            elif stat == "n_finished":
                out[key] = sum(j["status"] == FINISHED for j in jobs)
            else:
                out[key] = sum(j["status"] != FINISHED for j in jobs)
            continue
        row, metric = entry["row"], entry["metric"]
        label = entry["label"] or _default_label(analysis, row, metric)
        if stat in ("diff_mean", "paired_ci", "wilcoxon_p"):
            vs = entry["vs"]
            values = analysis["per_case"].get((row, label, metric))
            base = analysis["per_case"].get((vs, label, metric))
            if values is None or base is None:
                out[key] = None
                continue
            boot = spec.bootstrap
            out[key] = stats.paired_comparison(values, base, boot["confidence"], boot["n_resamples"],
                                               boot["seed"])[stat]
            continue
        described = analysis["table"].get(row, {}).get(label, {}).get(metric)
        if described is None:
            out[key] = None
            continue
        out[key] = described["mean" if stat == "value" else stat]
    return out


# --- provenance ------------------------------------------------------------------------------------------------------

def row_provenance(jobs: list[dict]) -> dict[str, dict]:
    """Per row: the commits (with dirty flags), invocation commands, dates, machines and devices of its jobs."""
    rows: dict[str, dict] = {}
    for job in jobs:
        record = job.get("record") or {}
        prov = record.get("provenance")
        if job["status"] != FINISHED or not prov:
            continue
        entry = rows.setdefault(job["label"], {"commits": set(), "commands": set(), "dates": [], "machines": set(),
                                               "devices": set(), "versions": set()})
        commit = prov.get("commit") or "unknown"
        entry["commits"].add(commit + (" (dirty)" if prov.get("dirty") else ""))
        entry["commands"].add(prov.get("command") or "")
        entry["dates"].append(prov.get("date") or "")
        machine = prov.get("machine") or {}
        entry["machines"].add(f"{machine.get('platform')}, {machine.get('cpu_count')} CPU cores "
                              f"(host {record.get('host')})")
        entry["devices"].add(prov.get("device") or "")
        entry["versions"].add(", ".join(f"{k} {v}" for k, v in sorted((prov.get("versions") or {}).items()) if v))
    return {row: {"commits": sorted(e["commits"]), "commands": sorted(e["commands"]),
                  "date_first": min(e["dates"]), "date_last": max(e["dates"]), "machines": sorted(e["machines"]),
                  "devices": sorted(e["devices"]), "versions": sorted(e["versions"])} for row, e in rows.items()}


# --- formatting ------------------------------------------------------------------------------------------------------

def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def _digits(metric: str) -> int:
    return 3 if metric in ("Dice", "IoU", "PPV", "SEN") else 2


def _cell(described: dict | None, metric: str) -> str:
    if not described or described["n_cases"] == 0:
        return "n/a"
    d = _digits(metric)
    text = f"{_fmt(described['mean'], d)} ± {_fmt(described['std'], d)} [{_fmt(described['ci'][0], d)}, " \
           f"{_fmt(described['ci'][1], d)}]"
    if described["n_undefined"] and metric in ("HD95", "ASD"):
        text += f" ({described['n_undefined']} undef.)"
    elif described["n_undefined"]:
        text += f" ({described['n_undefined']} empty)"
    return text


def _ordered_rows(spec: Spec, jobs: list[dict]) -> list[str]:
    labels = list(dict.fromkeys(j["label"] for j in jobs))
    order = [r for r in spec.table.get("rows", []) if r in labels]
    return order + [r for r in labels if r not in order]


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    escape = [[c.replace("|", "\\|") for c in row] for row in [header] + rows]
    lines = ["| " + " | ".join(escape[0]) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in escape[1:]]
    return lines


def _spec_state_line(state: dict | None) -> str:
    """Whether the study's spec was the committed file: a result from an edited or copied spec says so loudly."""
    if not state:
        return "- spec state: not recorded (a study run before spec states were recorded)"
    if state.get("committed"):
        return f"- spec state: {state['why']} (sha256 `{state['sha256'][:12]}`)"
    if state.get("committed") is None:
        return f"- spec state: unknown ({state.get('why')})"
    return f"- **spec state: not the committed spec** ({state['why']}; sha256 `{state['sha256'][:12]}`)"


def render_markdown(spec: Spec, study: dict, jobs: list[dict], analysis: dict, summary: dict,
                    provenance_rows: dict, report_provenance: dict, plots: list[str]) -> str:
    from nnunet_ext.provenance import markdown_block

    kinds = {j["label"]: j["kind"] for j in jobs}
    rows = _ordered_rows(spec, jobs)
    train_rows = [r for r in rows if kinds[r] in ("train", "ensemble")]
    command_rows = [r for r in rows if kinds[r] == "command"]
    labels = analysis["labels"]
    label_names = {str(k): v for k, v in spec.table.get("label_names", {}).items()}
    per_class = spec.table.get("per_class", True) and len(labels) > 1
    shown_labels = labels if per_class else ([labels[0]] if len(labels) == 1 else [MEAN_LABEL])
    groups = spec.table.get("groups") or [{"title": "", "metrics": list(spec.metrics)}]
    n_seeds = len({j["seed"] for j in jobs})

    lines = [f"# Benchmark: {spec.name}", ""]
    if spec.description:
        lines += [spec.description.strip(), ""]
    lines += ["Written by `nnunet-ext benchmark report`; interpretation belongs in a separate "
              f"`{spec.name}.findings.md`, which no command writes.", "",
              "## Provenance", "", "Study run (the invocation that planned the jobs below):", "",
              f"- spec: `{study.get('spec_file')}`; workdir: `{study.get('workdir')}`; executor: "
              f"{study.get('executor')}", f"- invocation: `{study.get('invocation')}`",
              _spec_state_line(study.get("spec_state")), "",
              "This report:", "", markdown_block(report_provenance), ""]
    commits = {c for p in provenance_rows.values() for c in p["commits"]}
    if len(commits) > 1:
        lines += [f"**The figures come from {len(commits)} different code states** (see the per-row table).", ""]
    lines += ["Per row (the jobs' own records; every figure in a row comes from these):", ""]
    prov_rows = []
    for row in rows:
        p = provenance_rows.get(row)
        if p is None:
            prov_rows.append([row, "no finished job", "", "", "", ""])
            continue
        prov_rows.append([row, ", ".join(f"`{c}`" for c in p["commits"]), " ".join(f"`{c}`" for c in p["commands"]),
                          f"{p['date_first']} .. {p['date_last']}", "; ".join(p["machines"]),
                          "; ".join(p["devices"])])
    lines += _md_table(["row", "commit", "command", "dates (UTC)", "machine", "device"], prov_rows)
    versions = sorted({v for p in provenance_rows.values() for v in p["versions"]})
    lines += ["", "Versions: " + (" / ".join(versions) if versions else "n/a"), ""]

    if train_rows:
        title = "## Results (test cases; mean ± std over cases [95 % bootstrap CI of the mean])"
        lines += [title, ""]
        header, body = ["row"], []
        for group in groups:
            for metric in group["metrics"]:
                for label in shown_labels:
                    name = metric if label in (MEAN_LABEL,) or len(shown_labels) == 1 else \
                        f"{metric} {label_names.get(label, 'label ' + label)}"
                    header.append(f"{group['title']}: {name}" if group["title"] else name)
        if spec.table.get("timings", True):
            header += ["train s", "predict s"]
        header += ["jobs"]
        for row in train_rows:
            cells = [row + (" *(baseline)*" if row == spec.baseline else "")]
            for group in groups:
                for metric in group["metrics"]:
                    for label in shown_labels:
                        lab = JOB_LABEL if metric in ("train_seconds", "predict_seconds", "seconds") else label
                        cells.append(_cell(analysis["table"].get(row, {}).get(lab, {}).get(metric), metric))
            if spec.table.get("timings", True):
                for metric in ("train_seconds", "predict_seconds"):
                    d = analysis["table"].get(row, {}).get(JOB_LABEL, {}).get(metric)
                    cells.append(_fmt(d["mean"], 0) if d else "n/a")
            row_jobs = [j for j in jobs if j["label"] == row]
            done = sum(j["status"] == FINISHED for j in row_jobs)
            cells.append(f"{done}/{len(row_jobs)}" + (" **incomplete**" if done < len(row_jobs) else ""))
            body.append(cells)
        lines += _md_table(header, body)
        label_text = "label " + shown_labels[0] if shown_labels[0] != MEAN_LABEL else \
            "mean over the foreground labels of each case"
        lines += ["", f"Per-case values are averaged over folds and seeds before the statistics ({label_text}); "
                      "HD95/ASD in mm, undefined cases (exactly one mask empty) left out and counted; Dice of a "
                      "missed lesion is 0; cases with both masks empty have no Dice (counted as empty). "
                      "train s / predict s: wall seconds of nnUNetv2_train / nnUNetv2_predict per job.", ""]

    if spec.baseline and analysis["paired"]:
        lines += [f"## Paired differences against the baseline ({spec.baseline})", "",
                  "Pairing unit: the test case (each row's per-case value averaged over its folds and seeds); "
                  f"{int(spec.bootstrap['confidence'] * 100)} % percentile bootstrap CI of the mean difference "
                  f"({spec.bootstrap['n_resamples']} resamples, seed {spec.bootstrap['seed']}); two-sided Wilcoxon "
                  "signed-rank test.", ""]
        body = []
        for row in rows:
            for label in shown_labels:
                for metric in spec.metrics:
                    c = analysis["paired"].get(row, {}).get(label, {}).get(metric)
                    if c is None:
                        continue
                    d = _digits(metric)
                    body.append([row, metric if len(shown_labels) == 1 else f"{metric} ({label})",
                                 _fmt(c["diff_mean"], d), f"[{_fmt(c['paired_ci'][0], d)}, "
                                                          f"{_fmt(c['paired_ci'][1], d)}]",
                                 _fmt(c["wilcoxon_p"], 4), str(c["n_pairs"])])
        lines += _md_table(["row", "metric", "mean difference", "95 % CI", "Wilcoxon p", "pairs"], body) + [""]

    if n_seeds > 1 and train_rows:
        lines += ["## Seeds", "", "Each seed's mean over cases (folds averaged); mean over seeds ± between-seed std "
                                  "(ddof 1).", ""]
        body = []
        for row in train_rows:
            for metric in spec.metrics:
                d = analysis["table"].get(row, {}).get(shown_labels[0], {}).get(metric)
                if not d:
                    continue
                dig = _digits(metric)
                body.append([row, metric, f"{_fmt(d['seed_mean'], dig)} ± {_fmt(d['seed_std'], dig)}",
                             ", ".join(f"{s}: {_fmt(v, dig)}" for s, v in d["seed_means"].items())])
        lines += _md_table(["row", "metric", "seed mean ± std", "per seed"], body) + [""]

    if command_rows:
        lines += ["## Command rows", "", "Metrics extracted from each command's output or JSON file; `seconds` is "
                                          "the command's wall time (setup excluded). Mean over seeds ± between-seed "
                                          "std; per-case metrics: mean ± std over cases.", ""]
        body = []
        for row in command_rows:
            for metric, d in sorted(analysis["table"].get(row, {}).get(JOB_LABEL, {}).items()):
                spread = d["seed_std"] if d["n_cases"] <= 1 else d["std"]
                body.append([row, metric, _fmt(d["mean"]), _fmt(spread), str(d["n_seeds"]),
                             str(d["n_cases"]) if d["n_cases"] > 1 else ""])
        lines += _md_table(["row", "metric", "value", "std", "seeds", "cases"], body) + [""]

    if summary:
        lines += _summary_tables(summary)
        lines += ["## Summary figures (`" + spec.name + ".json`)", ""]
        lines += _md_table(["key", "value"], [[k, _fmt(v, 4) if not isinstance(v, list) else
                                               "[" + ", ".join(_fmt(x, 4) for x in v) + "]"]
                                              for k, v in summary.items()]) + [""]

    problems = [j for j in jobs if j["status"] != FINISHED]
    lines += ["## Jobs", "", f"{len(jobs) - len(problems)} of {len(jobs)} jobs finished."]
    if problems:
        lines += ["", "Jobs that did not finish (their figures are missing above):", ""]
        lines += _md_table(["job", "status", "error", "log"],
                           [[j["id"], j["status"], (j.get("error") or "")[:160], f"`{j.get('log') or ''}`"]
                            for j in problems])
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def _summary_tables(summary: dict) -> list[str]:
    """Summary keys ``TABLE.ROW.COLUMN`` with single values, shown as one table per TABLE (rows and columns in the
    spec's order), e.g. a paper's table layout (``table1.nnunet.EDH``); every key is also in the list below."""
    tables: dict[str, dict[str, dict[str, object]]] = {}
    for key, value in summary.items():
        parts = key_parts(key)
        if len(parts) == 3 and not isinstance(value, (list, dict)):
            tables.setdefault(parts[0], {}).setdefault(parts[1], {})[parts[2]] = value
    lines = []
    for name, rows in tables.items():
        columns = list(dict.fromkeys(column for values in rows.values() for column in values))
        lines += [f"## Summary table `{name}`", ""]
        lines += _md_table(["", *columns], [[row, *(_fmt(values[c], 4) if c in values else "" for c in columns)]
                                            for row, values in rows.items()]) + [""]
    return lines


def _csv_text(spec: Spec, analysis: dict) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["row", "label", "metric", "mean", "std", "median", "ci_low", "ci_high", "n_cases",
                     "n_undefined", "seed_mean", "seed_std", "n_seeds", "diff_mean", "diff_ci_low", "diff_ci_high",
                     "wilcoxon_p", "n_pairs"])
    for row, labels in analysis["table"].items():
        for label, metrics in labels.items():
            for metric, d in sorted(metrics.items()):
                c = analysis["paired"].get(row, {}).get(label, {}).get(metric) or {}
                ci = c.get("paired_ci", [None, None])
                writer.writerow([row, label, metric, d["mean"], d["std"], d["median"], d["ci"][0], d["ci"][1],
                                 d["n_cases"], d["n_undefined"], d["seed_mean"], d["seed_std"], d["n_seeds"],
                                 c.get("diff_mean"), ci[0], ci[1], c.get("wilcoxon_p"), c.get("n_pairs")])
    return buffer.getvalue()


def _per_case_csv(records: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["row", "seed", "fold", "case", "label", "metric", "value"])
    for r in records:
        writer.writerow([r["row"], r["seed"], r["fold"], r["case"], r["label"], r["metric"], r["value"]])
    return buffer.getvalue()


# --- plots -----------------------------------------------------------------------------------------------------------

def _footer(report_provenance: dict, provenance_rows: dict) -> str:
    commits = sorted({c for p in provenance_rows.values() for c in p["commits"]}) or ["none"]
    short = ", ".join(c[:10] + (" (dirty)" if "dirty" in c else "") for c in commits)
    devices = sorted({d for p in provenance_rows.values() for d in p["devices"]})
    return f"jobs at commit {short}; device {', '.join(devices) or 'n/a'}; report {report_provenance['date']}"


def _save_png(fig, path: Path, metadata: dict) -> None:
    from nnunet_ext.atomic import atomic_output_file

    with atomic_output_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight",
                    metadata={"Software": "nnunet-ext benchmark report",
                              "Description": json.dumps(metadata, sort_keys=True, default=str)})


def write_plots(spec: Spec, jobs: list[dict], analysis: dict, results: Path, report_provenance: dict,
                provenance_rows: dict) -> list[str]:
    """Per metric: box + strip plot of the per-case values of every training row, and the paired differences
    against the baseline. Each PNG carries the provenance (text footer, and the full block in its metadata)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    kinds = {j["label"]: j["kind"] for j in jobs}
    rows = [r for r in _ordered_rows(spec, jobs) if kinds[r] in ("train", "ensemble")]
    labels = analysis["labels"]
    label = labels[0] if len(labels) == 1 else MEAN_LABEL
    footer = _footer(report_provenance, provenance_rows)
    metadata = {"report": report_provenance, "rows": provenance_rows}
    written = []
    for metric in spec.metrics:
        data = [(r, stats.finite(analysis["per_case"].get((r, label, metric), {}).values())) for r in rows]
        data = [(r, v) for r, v in data if v.size]
        if not data:
            continue
        fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(data) + 1.5), 4.0))
        ax.boxplot([v for _, v in data], showfliers=False)
        rng = np.random.default_rng(0)
        for i, (_, values) in enumerate(data, start=1):
            ax.scatter(i + rng.uniform(-0.12, 0.12, values.size), values, s=12, alpha=0.6, color="tab:blue")
        ax.set_xticks(range(1, len(data) + 1), [r for r, _ in data], rotation=25, ha="right", fontsize=8)
        ax.set_ylabel(f"{metric} per test case" + (" (mm)" if metric in ("HD95", "ASD") else ""))
        ax.set_title(f"{spec.name}: {metric}", fontsize=10)
        fig.text(0.01, -0.02, footer, fontsize=6, ha="left", va="top")
        name = f"{spec.name}_{metric.lower()}.png"
        _save_png(fig, results / name, metadata)
        plt.close(fig)
        written.append(name)
        paired = [(r, analysis["paired"].get(r, {}).get(label, {}).get(metric)) for r in rows]
        paired = [(r, c) for r, c in paired if c and c["n_pairs"]]
        if not paired:
            continue
        fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(paired) + 1.5), 4.0))
        for i, (_, c) in enumerate(paired, start=1):
            diffs = np.asarray(list(c["per_case"].values()))
            ax.scatter(i + rng.uniform(-0.12, 0.12, diffs.size), diffs, s=12, alpha=0.5, color="tab:gray")
            low, high = c["paired_ci"]
            if math.isfinite(low):
                ax.errorbar([i + 0.25], [c["diff_mean"]], yerr=[[c["diff_mean"] - low], [high - c["diff_mean"]]],
                            fmt="o", color="tab:red", capsize=4)
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xticks(range(1, len(paired) + 1), [r for r, _ in paired], rotation=25, ha="right", fontsize=8)
        ax.set_ylabel(f"{metric}: row - baseline, per test case")
        ax.set_title(f"{spec.name}: paired {metric} differences vs {spec.baseline} (mean, 95 % CI)", fontsize=9)
        fig.text(0.01, -0.02, footer, fontsize=6, ha="left", va="top")
        name = f"{spec.name}_{metric.lower()}_paired.png"
        _save_png(fig, results / name, metadata)
        plt.close(fig)
        written.append(name)
    return written


# --- entry -----------------------------------------------------------------------------------------------------------

def key_parts(key: str) -> list[str]:
    """``a.b.c`` -> ``["a", "b", "c"]``; a double-quoted part keeps its dots: ``low."0.15".unet`` ->
    ``["low", "0.15", "unet"]`` (result keys such as a fraction of the training cases)."""
    return [part.strip('"') for part in re.findall(r'"[^"]*"|[^.]+', key)]


def nested(summary: dict) -> dict:
    """Summary keys with dots become nested objects in the JSON: ``hc18_dice.unet`` -> ``{"hc18_dice": {"unet": ..}}``
    (result files whose issue asks for objects); see :func:`key_parts` for parts that contain dots."""
    out: dict = {}
    for key, value in summary.items():
        *parents, leaf = key_parts(key)
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def build_report(workdir: str | Path, results: str | Path | None = None, command=None) -> dict:
    """Write the report files of the study in ``workdir``; return the results JSON (as written)."""
    from nnunet_ext.provenance import collect, write_result

    workdir = Path(workdir).resolve()
    study, spec = load_study(workdir)
    results = Path(results or study["results"]).resolve()
    results.mkdir(parents=True, exist_ok=True)
    jobs = collect_jobs(study, workdir)
    analysis = analyse(spec, jobs)
    summary = summary_values(spec, analysis, jobs)
    provenance_rows = row_provenance(jobs)
    report_provenance = collect(command=command, device=study.get("device"))
    job_commits = sorted({(j["record"] or {}).get("provenance", {}).get("commit") or "unknown"
                          for j in jobs if j["status"] == FINISHED})
    commit = job_commits[0] if len(job_commits) == 1 else (job_commits or report_provenance.get("commit"))
    plots = write_plots(spec, jobs, analysis, results, report_provenance, provenance_rows)
    data = {**nested(summary), "commit": commit, "name": spec.name,
            "provenance": {"report": report_provenance, "study_invocation": study.get("invocation"),
                           "spec_file": study.get("spec_file"), "spec_state": study.get("spec_state"),
                           "rows": provenance_rows},
            "rows": {row: {"metrics": analysis["table"].get(row, {}), "paired": {
                label: {m: {k: v for k, v in c.items() if k != "per_case"} for m, c in metrics.items()}
                for label, metrics in analysis["paired"].get(row, {}).items()}}
                for row in _ordered_rows(spec, jobs)},
            "baseline": spec.baseline, "labels": analysis["labels"],
            "jobs": [{k: j.get(k) for k in ("id", "label", "fold", "seed", "key", "status", "error", "log")}
                     for j in jobs],
            "plots": plots}
    write_result(results / f"{spec.name}.json", json.dumps(json_ready(data), indent=2, sort_keys=False) + "\n")
    write_result(results / f"{spec.name}.csv", _csv_text(spec, analysis))
    write_result(results / f"{spec.name}.per_case.csv", _per_case_csv(analysis["records"]))
    write_result(results / f"{spec.name}.md", render_markdown(spec, study, jobs, analysis, summary, provenance_rows,
                                                              report_provenance, plots))
    return json_ready(data)
