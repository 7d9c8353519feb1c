"""``lamppost``: the command line.

Exit codes: 0 success, 1 partial failure (some tasks failed, the rest completed), 2 bad input
(nothing was written), 130 cancelled. Verbs that report have ``--json``: the machine-readable
answer goes to stdout, everything else to stderr.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from campaign import submit as submission
from campaign.spec import CampaignSpec, SpecError, json_schema, load_spec, parse_spec
from campaign.store import Store, StoreError

if TYPE_CHECKING:
    from campaign.report import ReportFiles

app = typer.Typer(
    name="lamppost",
    help="Automated search campaigns for new physics.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

EXIT_OK, EXIT_PARTIAL, EXIT_BAD_INPUT, EXIT_CANCELLED = 0, 1, 2, 130

JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print ``message`` without rich markup.

    Messages quote user input and ranges such as ``[low, high]``, which markup would swallow.
    """
    err.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _open_store(directory: str) -> Store:
    """The store at ``directory`` (a folder or URI); one clear error if it cannot be opened."""
    try:
        return Store(directory)
    except StoreError as problem:
        raise _fail(str(problem)) from None


def _emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=1, sort_keys=True, default=str) + "\n")


@app.command()
def validate(file: Path, as_json: JsonOption = False) -> None:
    """Check a campaign file; list every problem with its location and the allowed values."""
    try:
        spec = load_spec(file)
    except SpecError as problem:
        if as_json:
            _emit_json(
                {
                    "valid": False,
                    "problems": [{"location": loc, "message": m} for loc, m in problem.problems],
                }
            )
            raise typer.Exit(EXIT_BAD_INPUT) from None
        raise _fail(str(problem)) from None
    if as_json:
        _emit_json({"valid": True, "name": spec.name, "digest": spec.digest()})
    else:
        err.print(f"{file}: valid campaign '{spec.name}'", markup=False)


@app.command()
def schema(
    output: Annotated[Path | None, typer.Option("--out", help="Write to this file.")] = None,
) -> None:
    """Export the campaign file's JSON Schema (for editors)."""
    text = json.dumps(json_schema(), indent=1, sort_keys=True)
    if output is None:
        sys.stdout.write(text + "\n")
    else:
        output.write_text(text + "\n")


def _run(file: Path, *, resume: bool, as_json: bool) -> int:
    """Run a campaign file; return the exit code (bad input raises ``typer.Exit(2)``)."""
    try:
        spec = load_spec(file)
    except SpecError as problem:
        raise _fail(str(problem)) from None
    if _open_store(spec.store).exists("spec.json") and not resume:
        raise _fail(
            f"{spec.store}: a campaign store already exists; continue it with "
            f"`lamppost resume {spec.store}` (or `run --resume`), or choose a new store"
        )
    return _execute(spec, spec_text=file.read_text(), as_json=as_json)


def _stored_campaign(directory: str) -> tuple[CampaignSpec, str]:
    """The campaign that the store ``directory`` holds, with ``directory`` as its store.

    It comes from ``spec.json`` (sample paths stored absolute), not from ``campaign.yaml``:
    that file's relative ``store:`` and sample paths meant something only from where it was
    first run, so re-reading it from elsewhere would start a new campaign in another folder or
    look for the samples in the wrong one.
    """
    store = _open_store(directory)
    if not store.exists("spec.json"):
        raise _fail(
            f"{directory}: not a campaign store (no spec.json); allowed: a folder that "
            "`lamppost run` created"
        )
    source = store.path("spec.json")
    try:
        document = store.read_json("spec.json")
    except (OSError, ValueError) as problem:
        raise _fail(f"{source}: cannot be read ({problem})") from None
    if not isinstance(document, dict):
        raise _fail(f"{source}: not a campaign spec (expected a JSON object)")
    uri = directory if "://" in directory else os.path.abspath(directory)
    try:
        spec = parse_spec({**document, "store": uri}, source=source, base_dir=store.root)
    except SpecError as problem:
        raise _fail(str(problem)) from None
    text = store.read_text("campaign.yaml") if store.exists("campaign.yaml") else ""
    return spec, text


def _execute(spec: CampaignSpec, *, spec_text: str, as_json: bool) -> int:
    """Run (or continue) ``spec`` in its store; return the exit code."""
    from campaign.runner import run_campaign

    store = _open_store(spec.store)
    try:
        summary = run_campaign(spec, spec_text=spec_text)
    except StoreError as problem:
        raise _fail(str(problem)) from None
    except KeyboardInterrupt:
        raise _fail(
            f"cancelled; `lamppost resume {spec.store}` continues", EXIT_CANCELLED
        ) from None
    if as_json:
        _emit_json(
            {
                "store": summary.store,
                "done": summary.done,
                "failed": summary.failed,
                "skipped": summary.skipped,
                "failures": list(summary.failures),
                "global": summary.global_result,
            }
        )
    else:
        _print_status(store, top=spec.report.top)
        for failure in summary.failures:
            err.print(f"failed: {failure}", markup=False, highlight=False)
    return summary.exit_code


@app.command()
def run(
    file: Path,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the store if it holds this campaign.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Run a campaign file."""
    raise typer.Exit(_run(file, resume=resume, as_json=as_json))


@app.command()
def resume(directory: str, as_json: JsonOption = False) -> None:
    """Continue the campaign stored in DIRECTORY, in place; finished tasks are not run again."""
    spec, text = _stored_campaign(directory)
    raise typer.Exit(_execute(spec, spec_text=text, as_json=as_json))


def _read_status(store: Store) -> Any:
    from campaign.status import read_status

    try:
        return read_status(store)
    except (StoreError, FileNotFoundError, OSError) as problem:
        raise _fail(str(problem)) from None


@app.command()
def status(directory: str, as_json: JsonOption = False) -> None:
    """Where a campaign stands (reads the store only; works without Ray)."""
    if as_json:
        _emit_json(_read_status(_open_store(directory)).to_dict())
    else:
        _print_status(_open_store(directory), top=20)


def _print_status(store: Store, *, top: int) -> None:
    state = _read_status(store)
    tasks = ", ".join(
        f"{kind}: " + " ".join(f"{s}={n}" for s, n in counts.items())
        for kind, counts in state.tasks.items()
    )
    out.print(f"[bold]{state.name}[/] — {len(state.classes)} classes; tasks {tasks}")
    table = Table(title=f"Most significant searches (top {top})")
    for column in ("class", "method", "observable", "region", "obs", "exp", "Z local", "p̃"):
        table.add_column(column)
    for row in state.searches[:top]:
        table.add_row(
            row.event_class,
            row.method,
            row.observable,
            row.region,
            f"{row.observed:.0f}",
            f"{row.expected:.1f}",
            f"{row.z_local:.2f}",
            "" if row.p_tilde is None else f"{row.p_tilde:.2g}",
        )
    out.print(table)
    if state.global_result:
        g = state.global_result
        bound = g.get("resolution_limited", False)
        out.print(
            f"global p-value {'≤' if bound else '='} {g.get('p_global', float('nan')):.3g} "
            f"(Z {'≥' if bound else '='} {g.get('z_global', float('nan')):.2f}) over "
            f"{g.get('n_searches')} searches"
            + (" — bounds: the excess beat every pseudo-experiment of its search" if bound else "")
        )


@app.command()
def report(
    directory: Annotated[str | None, typer.Argument(help="Campaign store (folder or URI).")] = None,
    output: Annotated[
        Path | None, typer.Option("--out", help="Folder for report.html/.json/.pdf.")
    ] = None,
    pdf: Annotated[
        bool | None,
        typer.Option(
            "--pdf/--no-pdf",
            help="Require (or skip) the PDF; by default it is printed when Chromium is found.",
        ),
    ] = None,
    top: Annotated[
        int | None, typer.Option("--top", min=1, help="Deviations plotted (default: spec).")
    ] = None,
    print_schema: Annotated[
        bool, typer.Option("--schema", help="Print the summary's JSON Schema and exit.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Write the coverage report: self-contained HTML, JSON summary and PDF."""
    from campaign.report import report_schema

    if print_schema:
        _emit_json(report_schema())
        return
    if directory is None:
        raise _fail("report: give the campaign store (DIRECTORY), or --schema")
    files = _write_report(directory, out_dir=output, pdf=pdf, top=top)
    if as_json:
        _emit_json(
            {
                "html": str(files.html),
                "summary": str(files.summary),
                "pdf": None if files.pdf is None else str(files.pdf),
                "pdf_skipped": files.pdf_skipped or None,
            }
        )
    else:
        err.print(f"report: {files.html}", markup=False)
        err.print(f"summary: {files.summary}", markup=False)
        err.print(
            f"pdf: {files.pdf}" if files.pdf else f"pdf: skipped ({files.pdf_skipped})",
            markup=False,
        )


def _write_report(
    directory: str, *, out_dir: Path | None, pdf: bool | None, top: int | None = None
) -> ReportFiles:
    """Write the report of the store ``directory``; one clear error if it cannot be.

    A :class:`~campaign.store.StoreError` names the store already; other errors get its name.
    """
    from campaign.report import BrowserError, write_report

    store = _open_store(directory)
    try:
        return write_report(store, out_dir=out_dir, pdf=pdf, top=top)
    except StoreError as problem:
        raise _fail(str(problem)) from None
    except (BrowserError, OSError, ValueError) as problem:
        raise _fail(f"{directory}: {problem}") from None


def _reinterpret_published(
    store: Store, source: Path, *, select: list[str], limits: bool, as_json: bool
) -> None:
    from campaign.published import evaluate_published
    from campaign.runner import Driver
    from searches.likelihoods import LikelihoodImportError

    try:
        store.require_campaign()
        spec = CampaignSpec.model_validate(store.read_json("spec.json"))
        spec = spec.model_copy(update={"store": store.uri})
        driver = Driver(spec, spec_text=store.read_text("campaign.yaml"))
        results, folder = evaluate_published(
            source, run_tasks=driver.run_tasks, store=store, select=select, limits=limits
        )
    except (LikelihoodImportError, KeyError, SpecError, StoreError) as problem:
        raise _fail(str(problem).strip('"')) from None
    code = EXIT_PARTIAL if results.missing or results.missing_limits else EXIT_OK
    if as_json:
        _emit_json(
            {
                "source": results.source,
                "rows": list(results.rows),
                "missing": list(results.missing),
                "missing_limits": list(results.missing_limits),
                "saved": folder,
            }
        )
        raise typer.Exit(code)
    table = Table(title=f"{source.name}: {len(results.rows)} signal hypotheses")
    columns = ["region", "evaluated", "excluded (CLs < 0.05)", "failed"]
    if limits:
        columns += ["mu95 obs < 1", "no observed limit"]
    for column in columns:
        table.add_column(column)
    for region in results.regions():
        rows = [r for r in results.rows if r["region"] == region]
        failed = sum(1 for r in rows if r["status"] == "failed")
        cells = [region, str(len(rows)), str(results.excluded(region)), str(failed)]
        if limits:
            found = [r["mu_limit_obs"] for r in rows if r["mu_limit_obs"] is not None]
            cells += [str(sum(1 for mu in found if mu < 1)), str(len(rows) - len(found))]
        table.add_row(*cells)
    out.print(table)
    for row in results.rows:
        if row["status"] != "ok":
            err.print(
                f"{row['region']}/{row['patch']}: {row['status']} — {row['reason']}",
                markup=False,
            )
        if limits and row["limit_reason"]:
            err.print(
                f"{row['region']}/{row['patch']}: upper limits missing — {row['limit_reason']}",
                markup=False,
            )
    if results.missing:
        err.print(
            f"{len(results.missing)} patches not evaluated (their task failed; "
            f"`lamppost status {store.uri}` shows why): {', '.join(results.missing[:5])}",
            markup=False,
        )
    if results.missing_limits:
        err.print(
            f"{len(results.missing_limits)} patches without limits (their limit task failed; "
            f"`lamppost status {store.uri}` shows why): {', '.join(results.missing_limits[:5])}",
            markup=False,
        )
    err.print(f"saved to {store.path(folder)}", markup=False)
    raise typer.Exit(code)


def _positive_xsec(value: float | None) -> float | None:
    """Refuse a cross section that cannot normalise events now, before any file is read."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"{value} is not allowed; allowed: a finite number > 0 (pb)")
    return value


def _cls_text(verdict: Any) -> str:
    """Observed CLs, with the toys' binomial error where it came from pseudo-experiments."""
    if verdict.cls_observed is None:
        return ""
    error = (verdict.toys or {}).get("cls_obs_error") if verdict.calculator == "toys" else None
    return f"{verdict.cls_observed:.3g}" + ("" if error is None else f" ± {error:.1g}")


def _limit_text(verdict: Any) -> str:
    """Observed limit on μ, with the toys' error where it came from a toy scan."""
    if verdict.mu_limit_observed is None:
        return ""
    text = f"{verdict.mu_limit_observed:.3g}"
    if verdict.limit_calculator != "toys":
        return text + (" (asym.)" if verdict.calculator == "toys" else "")
    limits = (verdict.toys or {}).get("limits") or {}
    error, span = limits.get("observed_error"), limits.get("observed_span")
    text += "" if error is None else f" ± {error:.1g}"
    if span is not None:
        text += f" (anywhere in {span[0]:.3g}–{span[1]:.3g})"
    return text


def _positive_events(value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"{value} is not allowed; allowed: a finite number > 0 (events)")
    return value


def _parse_point(items: list[str]) -> dict[str, float]:
    point = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            point[name] = float(value)
        except ValueError:
            raise _fail(f"--point {item!r}: expected NAME=NUMBER, e.g. mass=1500") from None
    return point


@app.command()
def reinterpret(
    directory: str,
    events: Annotated[
        Path | None, typer.Option("--events", help="Signal events (ROOT or Parquet).")
    ] = None,
    preset: Annotated[
        str | None, typer.Option("--preset", help="Branch-map preset for ROOT events.")
    ] = None,
    xsec_pb: Annotated[
        float | None,
        typer.Option(
            "--xsec-pb", help="Cross section of the events file, pb (> 0).", callback=_positive_xsec
        ),
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="Theory model name.")] = None,
    point: Annotated[
        list[str] | None, typer.Option("--point", help="Parameter value, NAME=NUMBER.")
    ] = None,
    n_events: Annotated[
        int, typer.Option("--n-events", min=1, help="Events to simulate for --model.")
    ] = 20000,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed of the signal simulation and of the toys.")
    ] = 0,
    max_fits: Annotated[
        int, typer.Option("--max-fits", min=0, help="Most sensitive searches fitted with pyhf.")
    ] = 10,
    limits: Annotated[
        bool,
        typer.Option(
            "--limits", help="Also 95% CL upper limits on mu (with --patchset: each patch's)."
        ),
    ] = False,
    patchset: Annotated[
        Path | None,
        typer.Option(
            "--patchset",
            help="Published pyhf likelihood (tarball, folder, BkgOnly.json): every patch's CLs.",
        ),
    ] = None,
    patch: Annotated[
        list[str] | None, typer.Option("--patch", help="Only these patches (repeatable).")
    ] = None,
    toys: Annotated[
        int,
        typer.Option(
            "--toys",
            min=0,
            help="CLs from this many pseudo-experiments per ensemble for the searches whose "
            "signal meets few background events, and with --limits their limits from a scan "
            "of toy CLs (0: asymptotic everywhere). Seeded by --seed.",
        ),
    ] = 0,
    toys_below: Annotated[
        float,
        typer.Option(
            "--toys-below",
            callback=_positive_events,
            help="With --toys: sensitivity-weighted background (events) below which a search "
            "gets toys (campaign.reinterpret.TOYS_BELOW).",
        ),
    ] = 10.0,
    as_json: JsonOption = False,
) -> None:
    """Test a new benchmark (an events file, a model point or a published likelihood)."""
    from campaign import reinterpret as engine
    from campaign.benchmark import BenchmarkError, signal_events

    store = _open_store(directory)
    if patchset is not None:
        if toys:
            raise _fail(
                "--toys: not available with --patchset (published likelihoods are tested "
                "asymptotically)"
            )
        _reinterpret_published(store, patchset, select=patch or [], limits=limits, as_json=as_json)
        return
    try:
        results = engine.campaign_results(store)
        signal, benchmark = signal_events(
            store,
            events=events,
            preset=preset,
            xsec_pb=xsec_pb,
            model=model,
            point=_parse_point(point or []),
            n_events=n_events,
            seed=seed,
        )
    except (StoreError, BenchmarkError) as problem:
        raise _fail(str(problem)) from None
    toy_options = engine.ToyOptions(ntoys=toys, seed=seed, below=toys_below) if toys else None
    outcome = engine.reinterpret(
        results,
        signal,
        benchmark=benchmark,
        max_fits=max_fits,
        limits=limits,
        toys=toy_options,
        progress=not as_json,
    )
    folder = engine.save(store, outcome)
    if as_json:
        _emit_json({**outcome.to_dict(), "saved": folder})
        return
    table = Table(title=f"{benchmark.get('label', 'benchmark')}: {outcome.status}")
    for column in ("search", "signal", "CLs obs", "CLs exp", "from", "mu95 obs", "status"):
        table.add_column(column)
    tested = sorted(
        outcome.searches,
        key=lambda v: (v.cls_expected is None, v.cls_expected[2] if v.cls_expected else 1.0),
    )
    best = outcome.best_expected
    for listed in tested[:20]:
        verdict = best if best is not None and listed.search == best.search else listed
        table.add_row(
            verdict.search,
            f"{verdict.signal_events:.3g}",
            _cls_text(verdict),
            "" if verdict.cls_expected is None else f"{verdict.cls_expected[2]:.3g}",
            "" if verdict.cls_observed is None else verdict.calculator,
            _limit_text(verdict),
            verdict.status,
        )
    out.print(table)
    if outcome.combined is not None:
        c = outcome.combined
        out.print(
            f"combination of {len(outcome.combined_classes)} exclusive classes: "
            f"CLs = {_cls_text(c)} (expected {c.cls_expected[2]:.3g}, {c.calculator})"
            + (f", mu95 obs {_limit_text(c)}" if c.mu_limit_observed is not None else "")
            + f" → {c.status}"
            if c.cls_observed is not None and c.cls_expected is not None
            else f"combination: {c.status} ({c.reason})"
        )
    if toy_options is not None:
        out.print(
            f"toys: {toys} per ensemble where the signal meets fewer than {toys_below:g} "
            "background events (sensitivity-weighted)"
            + ("; their limits from toy CLs scans" if limits else "")
        )
    err.print(f"saved to {store.path(folder)}", markup=False)


@app.command()
def demo(
    directory: Annotated[
        Path, typer.Option("--dir", help="Where the demo campaign file and store go.")
    ] = Path("lamppost-demo"),
    as_json: JsonOption = False,
) -> None:
    """Write the demo campaign (built-in simulator, injected Z' signal) and run it."""
    from campaign.demo import write_demo

    directory.mkdir(parents=True, exist_ok=True)
    file = write_demo(directory)
    err.print(f"demo campaign file: {file}", markup=False)
    code = _run(file, resume=True, as_json=as_json)
    files = _write_report(str(directory / "store"), out_dir=None, pdf=None)
    err.print(f"report: {files.html}", markup=False)
    if files.pdf is None:
        err.print(f"pdf: skipped ({files.pdf_skipped})", markup=False)
    raise typer.Exit(code)


def _submit_flag(option: str) -> Any:
    """The typer option that sets ``option``, named and explained by ``submission.FLAGS``."""
    flag = submission.FLAGS[option]
    return typer.Option(flag.flag, help=flag.help)


def _flag_name(option: str) -> str:
    """How an error names ``option``: by the flag typed, where that is not the option's name."""
    flag = submission.FLAGS.get(option)
    return option if flag is None or flag.flag == f"--{option}" else f"{flag.flag} ({option})"


@app.command()
def submit(
    ctx: typer.Context,
    file: Path,
    target: Annotated[str, typer.Option("--target", help="k8s (KubeRay RayJob) or slurm.")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Render the files only; apply nothing.")
    ] = False,
    output: Annotated[
        Path | None, typer.Option("--out", help="Folder for the rendered files.")
    ] = None,
    image: Annotated[str | None, _submit_flag("image")] = None,
    namespace: Annotated[str | None, _submit_flag("namespace")] = None,
    env_secret: Annotated[str | None, _submit_flag("env_secret")] = None,
    time_limit: Annotated[str | None, _submit_flag("time_limit")] = None,
    partition: Annotated[str | None, _submit_flag("partition")] = None,
    account: Annotated[str | None, _submit_flag("account")] = None,
    setup: Annotated[str | None, _submit_flag("setup")] = None,
    as_json: JsonOption = False,
) -> None:
    """Render a campaign for Kubernetes (KubeRay) or Slurm and, unless --dry-run, submit it."""
    if target not in submission.TARGETS:
        raise _fail(
            f"--target: {target!r} is not allowed; allowed: {', '.join(submission.TARGETS)}"
        )
    # Each flag is the parameter named after its option; reading them by name keeps one list.
    options = {name: ctx.params[name] for name in submission.FLAGS if ctx.params[name] is not None}
    misplaced = [flag for name in options if (flag := submission.FLAGS[name]).target != target]
    if misplaced:
        allowed = [flag.flag for flag in submission.FLAGS.values() if flag.target == target]
        raise _fail(
            f"{', '.join(flag.flag for flag in misplaced)}: only for --target "
            f"{misplaced[0].target}; allowed with --target {target}: {', '.join(allowed)}"
        )
    try:
        result = submission.submit(
            target,  # type: ignore[arg-type]
            file,
            out_dir=output,
            dry_run=dry_run,
            **options,
        )
    except SpecError as problem:
        raise _fail(str(problem)) from None
    except submission.SubmitError as problem:
        raise _fail(problem.describe(_flag_name)) from None
    if as_json:
        _emit_json(
            {
                "target": target,
                "out_dir": str(result.out_dir),
                "files": [str(f) for f in result.files],
                "command": result.command,
            }
        )
    else:
        for path in result.files:
            err.print(f"wrote {path}", markup=False)
        if result.command:
            err.print(f"ran: {' '.join(result.command)}", markup=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
