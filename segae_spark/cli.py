"""The ``segae-spark`` command: demo, generate, train, score, evaluate, optimize, report, vacuum.

Thin by design: parse, validate, call the library, print. Errors the user can
fix (SegaeError) become one line on stderr and exit code 2; ``--debug`` keeps
the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

from segae_spark.errors import SegaeError
from segae_spark.evaluation import RANK_BY
from segae_spark.progress import configure_logging, logger

TRANSACTIONS_APP_ID = "segae-spark-score"


def _session(args, config: dict):
    from segae_spark.session import get_or_create_session, parse_spark_conf

    conf = {str(k): str(v) for k, v in (config.get("spark") or {}).items()}
    conf.update(parse_spark_conf(args.spark_conf))
    return get_or_create_session(conf)


def _load_model(path: str):
    from segae_spark.pipeline import SegmentAEModel

    return SegmentAEModel.load(path)


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return number


def cmd_generate(args) -> int:
    from segae_spark.data import generate_transactions
    from segae_spark.io import write_table

    spark = _session(args, {})
    df = generate_transactions(spark, args.rows, seed=args.seed, fraud_rate=args.fraud_rate, days=args.days)
    result = write_table(df, args.out, mode=args.mode, partition_by=["event_date"])
    print(f"wrote {args.rows:,} transactions to {args.out} (Delta version {result.version})")
    return 0


def _train(spark, input_path: str, config: dict, label_col: str | None):
    from segae_spark.config import to_params
    from segae_spark.errors import SchemaError
    from segae_spark.io import read_table
    from segae_spark.pipeline import SegmentAE

    params = to_params(config)
    if label_col:
        params["labelCol"] = label_col
    train = read_table(spark, input_path)
    try:
        return SegmentAE(**params).fit(train)
    except SchemaError as exc:  # about the training rows: say which table they came from
        raise SchemaError(f"training input {input_path}: {exc}") from None


def _options(args, config: dict, section: str, names: tuple[str, ...], required: tuple[str, ...]) -> dict:
    """Each option from the command line, else from the config's ``section``; the required ones must be set."""
    from segae_spark.errors import ConfigError

    values = {}
    for name in names:
        value = getattr(args, name)
        unset = value is None or value is False  # a flag left off may come from the config
        values[name] = (config.get(section) or {}).get(name, value) if unset else value
    missing = [n for n in required if values[n] is None]
    if missing:
        flags = ", ".join("--" + n.replace("_", "-") for n in missing)
        raise ConfigError(f"{args.command} needs {flags} (or {', '.join(f'{section}.{n}' for n in missing)} in --config)")
    return values


def _mlflow_tracking(args, config: dict) -> dict | None:
    """The config's ``mlflow:`` settings when ``--mlflow`` or ``mlflow.enabled`` asks for a run, else None.

    Checks that mlflow is installed, so a missing extra fails before the long work does.
    """
    tracking = dict(config.get("mlflow") or {})
    if not (args.mlflow or tracking.get("enabled")):
        return None
    from segae_spark.tracking import require_mlflow

    require_mlflow()
    return tracking


def cmd_train(args) -> int:
    from segae_spark.config import load_config

    config = load_config(args.config)
    opts = _options(args, config, "train", ("input", "model_dir", "overwrite"), ("input", "model_dir"))
    tracking = _mlflow_tracking(args, config)
    spark = _session(args, config)
    model = _train(spark, opts["input"], config, args.label_col)
    writer = model.write()
    if opts["overwrite"]:
        writer = writer.overwrite()
    writer.save(opts["model_dir"])
    print(f"model {model.model_id} saved to {opts['model_dir']}")
    _print_segments(model.segment_summary())
    if tracking is not None:
        _log_training(spark, opts, config, tracking)
    return 0


def _log_training(spark, opts: dict, config: dict, tracking: dict) -> None:
    """``train --mlflow``: the saved model as an MLflow run, with the config as params (see segae_spark.tracking)."""
    from segae_spark.io import read_table
    from segae_spark.tracking import log_model_run

    example = read_table(spark, opts["input"]).limit(5).toPandas()  # small: 5 rows, the pyfunc model's input example
    params = {key: value for key, value in config.items() if key != "mlflow"}
    params["train"] = {**(config.get("train") or {}), "input": opts["input"], "model_dir": opts["model_dir"]}
    run = log_model_run(
        opts["model_dir"], params, run_name=tracking.get("run_name"), experiment=tracking.get("experiment"), input_example=example
    )
    print(f"MLflow run {run.run_id} (experiment {run.experiment_id}); pyfunc model {run.model_uri or 'not logged'}")


_SCORE_OPTIONS = (
    "model_dir", "input", "output", "mode", "partition_by", "date_col", "from_date", "to_date", "chunk",
    "replace_where", "since_last", "since_version", "threshold_ratio",
)  # fmt: skip


def cmd_score(args) -> int:
    from segae_spark.batch_scoring import check_score_paths, score_table
    from segae_spark.config import load_config

    config = load_config(args.config)
    section = dict(config.get("score") or {})
    # "from" / "to" are Python keywords, hence the attribute names of their flags.
    section.update({"from_date": section.pop("from", None), "to_date": section.pop("to", None)})
    opts = _options(args, {"score": section}, "score", _SCORE_OPTIONS, ("model_dir", "input", "output"))
    check_score_paths(opts["input"], opts["output"])  # before the session and the model load
    spark = _session(args, config)
    model = _load_model(opts["model_dir"])
    if opts["threshold_ratio"] is not None:
        model.setThresholdRatio(opts["threshold_ratio"])
    run = score_table(
        model, spark, opts["input"], opts["output"],
        mode=opts["mode"],
        partition_by=[opts["partition_by"]] if opts["partition_by"] else None,
        date_col=opts["date_col"],
        start=opts["from_date"],
        end=opts["to_date"],
        chunk=opts["chunk"],
        replace=opts["replace_where"],
        since_last=opts["since_last"],
        since_version=opts["since_version"],
    )  # fmt: skip
    print(run.render())
    return 0


def cmd_evaluate(args) -> int:
    from segae_spark.io import read_table

    spark = _session(args, {})
    model = _load_model(args.model_dir)
    if args.threshold_ratio is not None:
        model.setThresholdRatio(args.threshold_ratio)
    metrics = model.evaluation(read_table(spark, args.input), args.label_col, rank_by=args.rank_by)
    text = json.dumps(metrics, indent=2)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    print(text)
    return 0


_OPTIMIZE_OPTIONS = ("train", "validation", "validation_fraction", "out", "overwrite", "metric", "rank_by", "parallelism")


def cmd_optimize(args) -> int:
    from segae_spark.config import load_config, to_params
    from segae_spark.io import read_table
    from segae_spark.optimizer import SegmentAEOptimizer, output_paths, split_validation
    from segae_spark.pipeline import SegmentAE
    from segae_spark.report import write_report

    config = load_config(args.config)
    opts = _options(args, config, "optimize", _OPTIMIZE_OPTIONS, ("train", "out"))
    grid = (config.get("optimize") or {}).get("grid") or {}
    params = to_params(config)
    if args.label_col:
        params["labelCol"] = args.label_col
    estimator = SegmentAE(**params)
    optimizer = SegmentAEOptimizer(
        estimator,
        autoencoders=grid.get("autoencoders"),
        cluster_models=grid.get("cluster_models"),
        n_clusters=grid.get("n_clusters"),
        training_modes=grid.get("training_modes"),
        threshold_ratios=grid.get("threshold_ratios"),
        metric=opts["metric"] or "pr_auc",
        rank_by=opts["rank_by"] or "score",
        parallelism=opts["parallelism"],
        supervised=grid.get("supervised"),
    )
    output_paths(opts["out"], bool(opts["overwrite"]))  # existing results refused before the search, not after
    tracking = _mlflow_tracking(args, config)
    spark = _session(args, config)
    train = read_table(spark, opts["train"])
    if opts["validation"]:
        validation = read_table(spark, opts["validation"])
    else:
        seed = estimator.getOrDefault(estimator.seed)
        train, validation = split_validation(train, opts["validation_fraction"] or 0.3, seed)
    result = optimizer.fit(train, validation)
    paths = result.save(opts["out"], overwrite=bool(opts["overwrite"]))
    report = os.path.join(opts["out"], "report.html")
    write_report(result.best_model, validation, report, label_col=result.best_model.getOrDefault("labelCol"),
                 input_name=f"validation rows ({opts['validation'] or 'held out of ' + opts['train']})")  # fmt: skip
    _print_leaderboard(result.leaderboard, result.metric, args.top)
    print(f"best model {result.best['model_id']} (candidate {result.best['candidate']}, threshold ratio "
          f"{result.best['threshold_ratio']:g}) saved to {paths['model']}")  # fmt: skip
    print(f"leaderboard: {paths['csv']} and Delta table {paths['delta']}; report of the best model: {report}")
    if tracking is not None:
        from segae_spark.tracking import log_model_run

        params = {key: value for key, value in config.items() if key != "mlflow"}
        metrics = {k: v for k, v in result.best.items() if isinstance(v, (int, float)) and k not in ("rank", "candidate")}
        example = validation.limit(5).toPandas()  # small: 5 rows, the pyfunc model's input example
        run = log_model_run(
            paths["model"], params, metrics, report_path=report, run_name=tracking.get("run_name"),
            experiment=tracking.get("experiment"), input_example=example, artifacts=[paths["csv"]],
        )  # fmt: skip
        print(f"MLflow run {run.run_id} (experiment {run.experiment_id}); pyfunc model {run.model_uri or 'not logged'}")
    return 0


def _print_leaderboard(rows: list[dict], metric: str, top: int) -> None:
    def fmt(value):
        return "   n/a" if value is None else f"{value:6.4f}"

    print(f"  {'rank':>4}  {'cand':>4}  {'clusterer':<17} {'k':>4}  {'mode':<11} {'ratio':>6}  "
          f"{'pr_auc':>6}  {'roc_auc':>7}  {'f1':>6}  {'recall':>6}  {'prec':>6}  autoencoder [+ second stage]")  # fmt: skip
    for r in rows[:top]:
        print(
            f"  {r['rank']:>4}  {r['candidate']:>4}  {r['cluster_model']:<17} {r['n_clusters']:>4}  {r['training_mode']:<11} "
            f"{r['threshold_ratio']:>6g}  {fmt(r['pr_auc'])}  {fmt(r['roc_auc']):>7}  {fmt(r['f1'])}  {fmt(r['recall'])}  "
            f"{fmt(r['precision'])}  {r['autoencoder']}" + ("" if r["second_stage"] == "none" else f" + {r['second_stage']}")
        )
    if len(rows) > top:
        print(f"  ... {len(rows) - top} more rows (ranked by {metric}) in the leaderboard files")


def cmd_report(args) -> int:
    from segae_spark.io import read_table
    from segae_spark.report import write_report

    spark = _session(args, {})
    model = _load_model(args.model_dir)
    if args.threshold_ratio is not None:
        model.setThresholdRatio(args.threshold_ratio)
    report = write_report(
        model, read_table(spark, args.input), args.out, label_col=args.label_col, input_name=args.input, top_features=args.top_features
    )  # fmt: skip
    print(report.render())
    return 0


def cmd_vacuum(args) -> int:
    from segae_spark.io import vacuum_table

    files = vacuum_table(args.table, args.retention_hours, dry_run=args.dry_run, enforce_retention=not args.skip_retention_check)
    for name in files:
        print(name)
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{verb} {len(files)} unreferenced files under {args.table}", file=sys.stderr)
    return 0


def _print_segments(segments: list[dict]) -> None:
    print(f"  {'segment':>7}  {'train rows':>10}  {'model':<10}  {'backend':<13}  {'threshold':>10}")
    for seg in segments:
        print(f"  {seg['segment']:>7}  {seg['rows']:>10,}  {seg['model']:<10}  {seg.get('backend', ''):<13}  {seg['threshold']:>10.5f}")


def cmd_demo(args) -> int:
    from segae_spark.config import load_config
    from segae_spark.demo import run_demo

    config = load_config(args.config) if args.config else None
    summary = run_demo(
        spark=_session(args, config or {}),
        rows=args.rows,
        workdir=args.workdir,
        seed=args.seed,
        threshold_ratio=args.threshold_ratio,
        config=config,
    )
    print(summary.render())
    return 0


def _mlflow_flag(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--mlflow", action="store_true", help=f"log {what} to MLflow's tracking URI (or mlflow.enabled in --config)"
    )


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--spark-conf", action="append", metavar="KEY=VALUE", help="Spark setting for a local session (repeatable)")
    common.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    common.add_argument("--quiet", action="store_true", help="only warnings and the result")

    parser = argparse.ArgumentParser(prog="segae-spark", description="Segment-wise autoencoder anomaly detection on Spark.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", parents=[common], help="generate data, train, score and evaluate end to end")
    p.add_argument("--rows", type=_positive, default=200_000, help="synthetic transactions to generate (default 200000)")
    p.add_argument("--workdir", default="demo_output", help="where tables and the model go (default ./demo_output)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threshold-ratio", type=float, default=None, help="override the demo's threshold ratio")
    p.add_argument("--config", help="YAML config replacing the demo's (see conf/demo.yaml)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("generate", parents=[common], help="write synthetic transactions as a Delta table")
    p.add_argument("--rows", type=_positive, required=True)
    p.add_argument("--out", required=True, help="Delta table path")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--fraud-rate", type=float, default=0.01)
    p.add_argument("--days", type=_positive, default=90)
    p.add_argument("--mode", choices=["error", "append", "overwrite"], default="error")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("train", parents=[common], help="fit a SegmentAE model and save it")
    p.add_argument("--input", help="Delta directory, Parquet or CSV (or train.input in --config)")
    p.add_argument("--model-dir", help="where the model goes (or train.model_dir in --config)")
    p.add_argument("--label-col", help="0/1 label; only label==0 rows train")
    p.add_argument("--config", help="YAML config (see conf/train.yaml)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model directory")
    _mlflow_flag(p, "the model directory, its params and training metrics, and a pyfunc model")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "score", parents=[common], help="score a table into a Delta table: whole, a date range chunk by chunk, or what is new",
        description="Each option may instead come from the score: section of --config (see conf/score.yaml).",
    )  # fmt: skip
    p.add_argument("--config", help="YAML config with a score: section (see conf/score.yaml)")
    p.add_argument("--model-dir")
    p.add_argument("--input", help="Delta directory, Parquet or CSV")
    p.add_argument("--output", help="Delta table path")
    p.add_argument(
        "--mode", choices=["error", "append", "overwrite"], default=None,
        help="whole-table runs: error (default), append or overwrite; date-range and --since-last runs append",
    )  # fmt: skip
    p.add_argument("--partition-by", help="partition column of a new output table (date-range runs: the date column)")
    p.add_argument("--date-col", help="date column for --from/--to (default: the model's date column)")
    p.add_argument("--from", dest="from_date", metavar="DATE", help="first date to score, YYYY-MM-DD")
    p.add_argument("--to", dest="to_date", metavar="DATE", help="last date to score (inclusive), YYYY-MM-DD")
    p.add_argument(
        "--chunk", choices=["day", "week", "month", "year"],
        help="commit the date range in these calendar chunks; a rerun skips the chunks already committed",
    )  # fmt: skip
    p.add_argument(
        "--replace-where", action="store_true",
        help="replace the output's rows in the date range (re-scoring) instead of appending",
    )  # fmt: skip
    p.add_argument("--since-last", action="store_true", help="score only the rows the Delta input gained since the last --since-last run")
    p.add_argument("--since-version", type=int, help="with --since-last: start after this input version (first run into an existing output)")
    p.add_argument("--threshold-ratio", type=float, default=None, help="override the model's threshold ratio")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("evaluate", parents=[common], help="score a labelled table and print metrics")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--input", required=True)
    p.add_argument("--label-col", required=True)
    p.add_argument("--json", help="also write the metrics JSON to this file")
    p.add_argument("--threshold-ratio", type=float, default=None, help="override the model's threshold ratio")
    p.add_argument(
        "--rank-by", choices=RANK_BY, default="score",
        help="what ROC-AUC / PR-AUC rank rows by: the raw score (default) or score_ratio (score / segment threshold)",
    )  # fmt: skip
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "optimize", parents=[common], help="grid-search autoencoders, clusterers, cluster counts, modes and threshold ratios",
        description="Trains every candidate of the optimize.grid section of --config (see conf/optimize.yaml), ranks "
        "them on labelled validation rows and saves the leaderboard (CSV and Delta), the best model and its report "
        "(report.html, on the validation rows) under --out.",
    )  # fmt: skip
    p.add_argument("--config", required=True, help="YAML config with an optimize: section (see conf/optimize.yaml)")
    p.add_argument("--train", help="training table (or optimize.train)")
    p.add_argument("--validation", help="labelled validation table (default: a seeded validation_fraction split of --train)")
    p.add_argument("--validation-fraction", type=float, help="share of --train held out when --validation is not given (default 0.3)")
    p.add_argument("--label-col", help="0/1 label (or label_col in --config)")
    p.add_argument("--out", help="directory for leaderboard.csv, leaderboard/ (Delta) and best_model/ (or optimize.out)")
    p.add_argument("--overwrite", action="store_true", help="replace earlier results under --out")
    p.add_argument("--metric", choices=["pr_auc", "roc_auc", "f1", "recall", "precision"], help="rank by (default pr_auc)")
    p.add_argument("--rank-by", choices=RANK_BY, help="what ROC-AUC / PR-AUC rank rows by (default score)")
    p.add_argument("--parallelism", type=_positive, help="candidates training at once (default 2, more on large clusters)")
    p.add_argument("--top", type=_positive, default=10, help="leaderboard rows to print (default 10)")
    _mlflow_flag(p, "the best model (with a pyfunc model), its metrics, the report and the leaderboard")
    p.set_defaults(func=cmd_optimize)

    p = sub.add_parser(
        "report", parents=[common], help="score a table and write a self-contained HTML report with plots and metrics",
        description="One HTML file (images embedded): error histograms and box plots per segment, ROC / PR curves and "
        "metrics (with --label-col), segment sizes and the top features of flagged rows, all from Spark aggregates.",
    )  # fmt: skip
    p.add_argument("--model-dir", required=True)
    p.add_argument("--input", required=True, help="Delta directory, Parquet or CSV")
    p.add_argument("--label-col", help="0/1 label: adds ROC / PR curves, confusion counts and metrics")
    p.add_argument("--out", default="report.html", help="HTML file to write (default report.html)")
    p.add_argument("--threshold-ratio", type=float, default=None, help="override the model's threshold ratio")
    p.add_argument("--top-features", type=_positive, default=3, help="top features per row counted among flagged rows (default 3)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "vacuum", parents=[common], help="delete data files of a Delta table that no version references (e.g. left by a killed job)",
        description="Needs no Spark. Lists or deletes files under the table that the current snapshot does not reference "
        "and that are older than the retention: orphans of killed or conflicted writes, and files removed by overwrites.",
    )  # fmt: skip
    p.add_argument("--table", required=True, help="Delta table path")
    p.add_argument("--retention-hours", type=int, help="only files older than this (default: the table's retention, 7 days)")
    p.add_argument("--dry-run", action="store_true", help="list the files, delete nothing")
    p.add_argument(
        "--skip-retention-check", action="store_true",
        help="allow a retention below the table's; only when no job is writing to the table, whose new files are not yet in the log",
    )  # fmt: skip
    p.set_defaults(func=cmd_vacuum)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO
    configure_logging(level)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    start = time.perf_counter()
    try:
        code = args.func(args)
    except SegaeError as exc:
        if args.debug:
            raise
        print(f"segae-spark {args.command}: error: {exc}", file=sys.stderr)
        return 2
    logger.info("%s finished in %.1fs", args.command, time.perf_counter() - start)
    return code


if __name__ == "__main__":
    sys.exit(main())
