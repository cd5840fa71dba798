"""The report folder of ``eval-bag``: self-contained, written atomically.

    <out>/index.html          summary: settings, per-joint and per-episode tables, the plots, notes
    <out>/metrics.json        every number of the summary (and more), machine-readable
    <out>/plots/<joint>.png   recorded vs simulated commands over bag time (+ the chunks as predicted)
    <out>/plots/horizon.png   error by horizon step within a chunk

Everything is written into ``.<name>.tmp-*`` beside ``<out>`` and renamed into place at the end (an existing
``<out>`` is only replaced with ``--force``, and only then swapped out), so an error or Ctrl-C at any point
leaves no half-written report. Links in the HTML are relative: the folder can be moved or zipped.
"""
from __future__ import annotations

import html
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from gemma3nvla_ros.tools.eval_bag import EvalResult

MAX_PLOTTED_CHUNKS = 300  # faint chunk lines per joint plot; more are thinned out evenly


class ReportError(RuntimeError):
    pass


def check_out(out: Path, force: bool) -> None:
    """Fail before any work when the report could not be put at ``out``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out {out} is a file, not a report folder")
    if out.exists() and not force:
        raise ReportError(f"--out {out} already exists: choose another folder or pass --force to replace it")
    parent = out.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        Path(tempfile.mkdtemp(prefix=f".{out.name}.check-", dir=parent)).rmdir()
    except OSError as exc:
        raise ReportError(f"cannot write a report into {parent}: {exc}") from None


def write_report(out: Path, result: "EvalResult", info: dict[str, Any], force: bool = False) -> Path:
    """Write the report folder (see the module docstring); returns its path."""
    out = Path(out).absolute()
    check_out(out, force)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        doc = report_json(result, info)
        (tmp / "metrics.json").write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
        plots = write_plots(tmp / "plots", result)
        (tmp / "index.html").write_text(report_html(doc, plots))
        _install(tmp, out, force)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _install(tmp: Path, out: Path, force: bool) -> None:
    old = None
    if out.exists():
        if not force:
            raise ReportError(f"--out {out} appeared while evaluating: not replacing it (pass --force)")
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.rename(out, old / out.name)
    try:
        os.rename(tmp, out)
    except OSError:
        if old is not None:
            os.rename(old / out.name, out)  # put the previous report back
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- JSON
def report_json(result: "EvalResult", info: dict[str, Any]) -> dict[str, Any]:
    from gemma3nvla_ros.tools.bag_io import format_time

    opts = result.options
    bag_s = (result.range_ns[1] - result.range_ns[0]) / 1e9
    reference = {
        "source": result.plan.reference,
        "topic": result.plan.commands if result.plan.reference == "commands" else result.plan.joint_states,
        "meaning": ("latest recorded command at each tick" if result.plan.reference == "commands"
                    else "recorded joint state one control period after each tick (interpolated)"),
    }
    return _clean({
        "bag": {"path": result.bag_path, "start": format_time(result.bag_start_ns),
                "range_s": [(result.range_ns[0] - result.bag_start_ns) / 1e9,
                            (result.range_ns[1] - result.bag_start_ns) / 1e9],
                "description": result.bag_description},
        "policy": {**info, "task": opts.task},
        "topics": {"cameras": dict(result.plan.cameras), "joint_states": result.plan.joint_states,
                   "commands": result.plan.commands, "task": result.plan.task_topic},
        "reference": reference,
        "settings": {
            "strategy": opts.strategy, "chunk_size_threshold": opts.threshold, "max_step_rad": opts.max_step,
            "control_rate_hz": opts.control_rate or result.contract.fps, "ensemble_m": opts.ensemble_m,
            "max_observation_age_s": opts.max_observation_age, "latency": opts.latency, "stamps": opts.stamps,
            "episode_gap_s": opts.episode_gap, "fps": result.contract.fps, "chunk_size": result.contract.chunk_size,
            "contract": result.contract.source,
        },
        "units": result.metrics["units"],
        "gripper_threshold": result.metrics["gripper_threshold"],
        "overall": result.metrics["overall"],
        "episodes": result.metrics["episodes"],
        "speed": {"bag_s": bag_s, "wall_s": result.wall_s, "x_real_time": bag_s / result.wall_s if result.wall_s else None},
        "notes": result.notes,
    })


def _clean(value: Any) -> Any:
    """JSON-safe: numpy scalars to Python, NaN/inf to None."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


# ---------------------------------------------------------------------------------------------- plots
def write_plots(directory: Path, result: "EvalResult") -> dict[str, str]:
    """``{title: relative path}`` of the PNGs written."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from gemma3nvla_ros.tools.eval_bag import _to_dataset

    directory.mkdir(parents=True, exist_ok=True)
    joints = list(result.contract.joints)
    width = len(joints)
    units = result.metrics["units"]
    t0 = result.bag_start_ns
    sec = lambda ns: (np.asarray(ns, dtype=np.float64) - t0) / 1e9  # noqa: E731

    js_t, js_v = result.joint_states.arrays(width)
    js_v = _to_dataset(result.units, js_v)
    cmd_t, cmd_v = result.commands.arrays(width)
    cmd_v = _to_dataset(result.units, cmd_v)
    sim_t, sim_v = [], []
    for ep in result.episodes:  # NaN rows between episodes break the lines
        sim_t.append(sec(np.asarray(ep.command_ns, dtype=np.int64)))
        sim_v.append(_to_dataset(result.units, np.asarray(ep.commands, dtype=np.float64).reshape(-1, width)))
        for lst in (sim_t, sim_v):
            lst.append(np.full((1,) + lst[-1].shape[1:], np.nan))
    sim_t_a, sim_v_a = np.concatenate(sim_t), np.concatenate(sim_v)
    chunks = [(c, ep.end_ns) for ep in result.episodes for c in ep.chunks if c.merged]
    if len(chunks) > MAX_PLOTTED_CHUNKS:
        chunks = [chunks[i] for i in np.linspace(0, len(chunks) - 1, MAX_PLOTTED_CHUNKS).astype(int)]
    chunk_vals = [(sec(c.times_ns[c.times_ns <= end]), _to_dataset(result.units, c.positions[c.times_ns <= end]))
                  for c, end in chunks]

    plots: dict[str, str] = {}
    for j, name in enumerate(joints):
        fig, ax = plt.subplots(figsize=(11, 3.4), dpi=90)
        for k, ep in enumerate(result.episodes):
            ax.axvspan(sec(ep.start_ns), sec(ep.end_ns), color="#f2f2f2" if k % 2 == 0 else "#e6eef7", zorder=0)
        if len(js_t):
            ax.plot(sec(js_t), js_v[:, j], color="0.55", lw=1.0, label="recorded joint state")
        if len(cmd_t):
            ax.plot(sec(cmd_t), cmd_v[:, j], color="k", lw=1.0, ls="--", label="recorded command")
        for k, (ct, cv) in enumerate(chunk_vals):
            ax.plot(ct, cv[:, j], color="tab:orange", lw=0.6, alpha=0.25, label="predicted chunks" if k == 0 else None)
        ax.plot(sim_t_a, sim_v_a[:, j], color="tab:blue", lw=1.4, label="policy command (simulated)")
        ax.set_xlabel("bag time (s)")
        ax.set_ylabel(f"{name} ({units[name]})")
        ax.set_title(f"{name}: recorded vs what the policy would have commanded")
        ax.legend(loc="upper right", fontsize=7, ncol=2)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = directory / f"{_safe(name)}.png"
        fig.savefig(path)
        plt.close(fig)
        plots[name] = f"plots/{path.name}"

    horizon = result.metrics["overall"]["horizon"]["mae"]
    fps = result.contract.fps
    body = [n for n in joints if units[n] != "0..100"]
    grip = [n for n in joints if units[n] == "0..100"]
    fig, axes = plt.subplots(1, 2 if grip else 1, figsize=(11, 3.4), dpi=90, squeeze=False)
    for ax, names in zip(axes[0], (body, grip)):
        for name in names:
            values = np.array([np.nan if v is None else v for v in horizon[name]], dtype=np.float64)
            ax.plot(np.arange(len(values)) / fps, values, marker=".", ms=3, lw=1, label=name)
        ax.set_xlabel("horizon within the chunk (s)")
        ax.set_ylabel(f"MAE ({units[names[0]]})" if names else "MAE")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("error by horizon: action i of every chunk vs the recording at its due time", fontsize=10)
    fig.tight_layout()
    fig.savefig(directory / "horizon.png")
    plt.close(fig)
    plots["error by horizon"] = "plots/horizon.png"
    return plots


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "joint"


# ---------------------------------------------------------------------------------------------- HTML
def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def _ms(value: Any) -> str:
    return "–" if value is None else f"{1000 * value:.1f} ms"


def report_html(doc: dict[str, Any], plots: dict[str, str]) -> str:
    e = html.escape
    overall = doc["overall"]
    units = doc["units"]
    joints = list(units)
    hz = overall["horizon"]["mae"]

    def horizon_at(name: str, i: int) -> str:
        values = hz[name]
        return _fmt(values[i]) if -len(values) <= i < len(values) else "–"

    mid = len(next(iter(hz.values()), [])) // 2
    rows = "".join(
        f"<tr><td>{e(j)}</td><td>{e(units[j])}</td><td>{_fmt(overall['commands']['joints'][j]['mae'])}</td>"
        f"<td>{_fmt(overall['commands']['joints'][j]['rmse'])}</td><td>{_fmt(overall['commands']['joints'][j]['max_abs'])}</td>"
        f"<td>{horizon_at(j, 0)}</td><td>{horizon_at(j, mid)}</td><td>{horizon_at(j, -1)}</td></tr>"
        for j in joints)
    grip = overall.get("gripper") or {}
    lat = overall["latency"]
    speed = doc["speed"]
    ep_rows = "".join(
        f"<tr><td>{ep['index']}</td><td>{ep['start_s']:.2f}</td><td>{ep['end_s']:.2f}</td><td>{ep['duration_s']:.2f}</td>"
        f"<td>{_fmt(ep['commands']['mean_mae'])}</td><td>{_fmt(ep['commands']['mean_rmse'])}</td>"
        f"<td>{_pct((ep.get('gripper') or {}).get('agreement'))}</td><td>{_pct(ep['coverage'])}</td>"
        f"<td>{ep['counts'].get('chunks', 0)}</td><td>{ep['counts'].get('refusals', 0)}</td>"
        f"<td>{_ms(ep['latency']['p50_s'])}</td></tr>"
        for ep in doc["episodes"])
    refusals = "".join(f"<li>{n}× {e(r)}</li>" for r, n in overall["refusals"].items()) or "<li>none</li>"
    rejections = "".join(f"<li>{n}× {e(r)}</li>" for r, n in overall.get("rejections", {}).items())
    notes = "".join(f"<li>{e(str(n))}</li>" for n in doc["notes"]) or "<li>none</li>"
    figures = "".join(f'<figure><a href="{e(p)}"><img src="{e(p)}" alt="{e(t)}"></a><figcaption>{e(t)}</figcaption></figure>'
                      for t, p in plots.items())
    settings = "".join(f"<tr><td>{e(k)}</td><td>{e(str(v))}</td></tr>" for k, v in doc["settings"].items())
    topics = doc["topics"]
    cams = ", ".join(f"{e(k)} ← {e(v)}" for k, v in topics["cameras"].items())
    ref = doc["reference"]
    counts = overall["counts"]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>eval-bag: {e(Path(doc['bag']['path']).name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: .5em 0 1.2em; font-size: 14px; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
th {{ background: #f3f3f3; }} pre {{ background: #f7f7f7; padding: .6em; overflow-x: auto; font-size: 12px; }}
figure {{ margin: .5em 0; }} img {{ max-width: 100%; }} figcaption {{ font-size: 12px; color: #666; }}
.kv td {{ text-align: left; }}
</style></head><body>
<h1>Offline evaluation: {e(Path(doc['bag']['path']).name)}</h1>
<table class="kv">
<tr><td>checkpoint</td><td>{e(str(doc['policy'].get('checkpoint')))}</td></tr>
<tr><td>task</td><td>{e(str(doc['policy'].get('task') or ('from ' + str(topics['task']))))}</td></tr>
<tr><td>cameras</td><td>{cams}</td></tr>
<tr><td>reference</td><td>{e(ref['source'])} ({e(str(ref['topic']))}): {e(ref['meaning'])}</td></tr>
<tr><td>latency model</td><td>{e(_latency_words(doc['settings']['latency']))}</td></tr>
<tr><td>episodes</td><td>{overall['episodes']} ({overall['duration_s']:.1f} s of bag time)</td></tr>
<tr><td>speed</td><td>{speed['bag_s']:.1f} bag s in {speed['wall_s']:.1f} s = {_fmt(speed['x_real_time'], 1)}× real time</td></tr>
</table>
<h2>Commands vs recording, per joint (all episodes)</h2>
<p>MAE / RMSE over {overall['commands']['n']} control ticks with a known reference; horizon columns: MAE of action
0, {mid} and the last action of every chunk against the recording at its due time.</p>
<table><tr><th>joint</th><th>unit</th><th>MAE</th><th>RMSE</th><th>max</th><th>horizon 0</th><th>horizon {mid}</th>
<th>horizon last</th></tr>{rows}</table>
<table class="kv">
<tr><td>gripper open/close agreement</td><td>{_pct(grip.get('agreement'))} of {grip.get('n', 0)} ticks (open above
{_fmt(grip.get('threshold'), 1)})</td></tr>
<tr><td>inference latency (here)</td><td>p50 {_ms(lat['p50_s'])}, p90 {_ms(lat['p90_s'])}, max {_ms(lat['max_s'])}
over {lat['n']} chunks</td></tr>
<tr><td>ticks with a command</td><td>{_pct(overall['coverage'])} ({counts.get('commands', 0)} of {counts.get('ticks', 0)})</td></tr>
<tr><td>chunks merged / rejected</td><td>{counts.get('chunks_merged', 0)} / {counts.get('chunks_rejected', 0)}
(setpoints dropped as past: {counts.get('setpoints_dropped_past', 0)})</td></tr>
<tr><td>holds, step-clamped ticks</td><td>{counts.get('holds', 0)}, {counts.get('ticks_step_clamped', 0)}</td></tr>
</table>
<h3>Refused observations</h3><ul>{refusals}</ul>
{'<h3>Rejected chunks</h3><ul>' + rejections + '</ul>' if rejections else ''}
<h2>Episodes</h2>
<table><tr><th>#</th><th>start s</th><th>end s</th><th>duration s</th><th>mean MAE</th><th>mean RMSE</th>
<th>gripper agree</th><th>coverage</th><th>chunks</th><th>refusals</th><th>latency p50</th></tr>{ep_rows}</table>
<h2>Plots</h2>{figures}
<h2>Settings</h2><table class="kv">{settings}</table>
<h2>Notes</h2><ul>{notes}</ul>
<h2>Bag</h2><pre>{e(doc['bag']['description'])}</pre>
<p>All numbers: <a href="metrics.json">metrics.json</a>.</p>
</body></html>
"""


def _latency_words(latency: Any) -> str:
    text = str(latency).strip().lower()
    if text in ("zero", "0", "0.0"):
        return "zero: each chunk is merged at the tick that asked for it"
    if text == "measured":
        return "measured: each chunk is merged after the inference time measured here"
    return f"fixed: each chunk is merged {text} s after the tick that asked for it"


def summary_text(result: "EvalResult") -> str:
    overall = result.metrics["overall"]
    units = result.metrics["units"]
    lines = [f"{overall['episodes']} episode(s), {overall['duration_s']:.1f} s; "
             f"reference: {result.plan.reference}; {overall['counts'].get('chunks', 0)} chunks, "
             f"{overall['counts'].get('refusals', 0)} refusals"]
    for name, m in overall["commands"]["joints"].items():
        lines.append(f"  {name:<14} MAE {_fmt(m['mae'])} RMSE {_fmt(m['rmse'])} {units[name]}")
    grip = overall.get("gripper")
    if grip:
        lines.append(f"  gripper open/close agreement {_pct(grip['agreement'])}")
    lat = overall["latency"]
    lines.append(f"  inference p50 {_ms(lat['p50_s'])}, p90 {_ms(lat['p90_s'])}")
    return "\n".join(lines)
