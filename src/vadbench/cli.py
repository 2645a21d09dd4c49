"""`vadbench` command line: run, report, data (check, where), demo-data, kaggle, distill-teacher, fetch-backbone."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from vadbench import quiet

log = logging.getLogger("vadbench")

DEMO_DATA_ROOT = Path("outputs/data")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vadbench", description="Visual anomaly detection benchmark.")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging; third-party warnings, papermill's and the kernels' own output")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="execute every run of an experiment (papermill, one notebook per run)")
    run.add_argument("params", type=Path, nargs="?", default=Path("params/experiments/demo.yaml"),
                     help="experiment file (default: the embedded demo, params/experiments/demo.yaml)")
    run.add_argument("--output", type=Path, default=Path("outputs/runs"), help="runs root (default outputs/runs)")
    run.add_argument("--force", action="store_true", help="rerun runs that already finished")
    run.add_argument("--dry-run", action="store_true", help="list the runs and check inputs; train nothing")
    run.add_argument("--workers", type=int, default=None,
                     help="runs at once (default: one per visible GPU on CUDA, else 1); on CPU each gets cores//N threads")
    run.add_argument("--launcher", choices=["local", "submitit-local", "slurm"], default="local",
                     help="local processes (default), submitit's local executor, or one Slurm job per run")
    run.add_argument("--slurm-params", type=Path, default=None,
                     help="Slurm resources file for --launcher slurm (see params/launchers/slurm.yaml)")

    report = sub.add_parser("report", help="build tables, figures and the HTML report from run records")
    report.add_argument("--runs", type=Path, default=Path("outputs/runs"), help="runs root (default outputs/runs)")
    report.add_argument("--out", type=Path, default=Path("outputs/report"), help="report folder (default outputs/report)")
    report.add_argument("--markdown", type=Path, default=None, metavar="FILE",
                        help="instead of the report, write the results tables as Markdown to FILE (for docs)")

    _speed_parser(sub)
    _kaggle_parser(sub)
    data = sub.add_parser("data", help="check a dataset root, or say where to get a dataset")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    from vadbench.registry import DATASET_KINDS

    check = data_sub.add_parser("check", help="validate a dataset root before any training (layout, masks, counts)")
    check.add_argument("dataset", choices=DATASET_KINDS, help="dataset kind")
    check.add_argument("--root", type=Path, default=None,
                       help="dataset root (default: $VADBENCH_<KIND>_ROOT, else datasets/<kind>)")
    check.add_argument("--categories", nargs="+", default=None, help="only these categories (default: all)")
    where = data_sub.add_parser("where", help="where to download a dataset and the folder to unpack it into")
    where.add_argument("dataset", choices=DATASET_KINDS, help="dataset kind")

    demo = sub.add_parser("demo-data", help="build the embedded offline demo dataset from scikit-image photos")
    demo.add_argument("--root", type=Path, default=DEMO_DATA_ROOT, help="where to build (default outputs/data)")
    _distill_parser(sub)
    fetch = sub.add_parser("fetch-backbone", help="download a backbone's ImageNet weights (torchvision's into the torch "
                           "hub cache, timm's into the Hugging Face cache; needs internet; then usable offline)")
    fetch.add_argument("arch", help="architecture, e.g. wide_resnet101_2 (torchvision) or resnet18 (both)")
    fetch.add_argument("--source", choices=["all", "torchvision", "timm"], default="all",
                       help="whose weights: torchvision's (PatchCore, PaDiM, Cfa, ...), timm's (Fastflow, Patchflow, "
                            "ReverseDistillation with pre_trained: true) or every one that has the name (default)")
    return parser


def _speed_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("speed", help="time the models of an experiment on random input (no dataset): latency, "
                       "throughput, memory, parameters, FLOPs, published figures beside")
    p.add_argument("params", type=Path, help="experiment file")
    p.add_argument("--model", default=None, help="only this model (default: every model of the experiment)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="default auto")
    p.add_argument("--batch-sizes", default=None, help="default 1,16")
    p.add_argument("--precisions", default=None,
                   help="fp32, fp16, bf16, comma-separated (default: fp32,fp16 on a GPU, fp32 on a CPU)")
    p.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    p.add_argument("--warmup", type=int, default=None, help="untimed passes first (default: 100 on a GPU, 3 on a CPU)")
    p.add_argument("--iterations", type=int, default=None, help="timed passes (default: 200 on a GPU, 20 on a CPU)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="stop each measurement's timed passes after this many seconds (default: none on a GPU, 5 on a CPU)")
    p.add_argument("--train-steps", type=int, default=0,
                   help="EfficientAD: also time this many training steps on random data (default 0: none)")
    p.add_argument("--out", type=Path, default=None, help="also write the rows to this .csv or .json file")


def _speed_given(args: argparse.Namespace) -> dict:
    """The speed settings given on the command line (the rest come from the device's defaults)."""
    from vadbench.errors import ConfigError

    given = {k: v for k, v in (("warmup", args.warmup), ("iterations", args.iterations), ("budget_s", args.budget_s))
             if v is not None}
    if args.channels_last:
        given["channels_last"] = True
    if args.batch_sizes is not None:
        try:
            given["batch_sizes"] = [int(b) for b in args.batch_sizes.split(",")]
        except ValueError:
            raise ConfigError(f"--batch-sizes {args.batch_sizes!r}: write integers separated by commas, e.g. 1,16") from None
    if args.precisions is not None:
        given["precisions"] = args.precisions.split(",")
        if set(given["precisions"]) - {"fp32", "fp16", "bf16"}:
            raise ConfigError(f"--precisions {args.precisions!r}: use fp32, fp16 and/or bf16, e.g. fp32,fp16")
    return given


def _speed(args: argparse.Namespace) -> int:
    from vadbench.config import load_experiment
    from vadbench.report.speed import with_published
    from vadbench.run.speed import speed_table

    given = _speed_given(args)
    exp = load_experiment(args.params)
    table = with_published(speed_table(exp, given, args.device, args.model, args.train_steps), exp.references)
    shown = ["model", "device", "protocol", "precision", "batch_size", "latency_ms_median", "latency_ms_p90",
             "img_per_s", "published_latency_ms", "published_img_per_s", "note"]
    sys.stdout.write(table[shown].to_string(index=False, float_format=lambda v: f"{v:.4g}") + "\n")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if args.out.suffix == ".json":
            args.out.write_text(table.to_json(orient="records", indent=1), encoding="utf-8")
        else:
            table.to_csv(args.out, index=False)
        log.info("speed rows: %s", args.out)
    return 0


def _kaggle_parser(sub: argparse._SubParsersAction) -> None:
    kaggle = sub.add_parser("kaggle", help="run an experiment as Kaggle kernels and pull their records home")
    ksub = kaggle.add_subparsers(dest="kaggle_command", required=True)
    push = ksub.add_parser("push", help="write one kernel folder per shard, push the code dataset and the shards not "
                           "pushed yet (until the account's GPU session limit)")
    drive = ksub.add_parser("drive", help="push, watch, pull and push again until every shard is done (resumable)")
    rehearse = ksub.add_parser("rehearse", help="execute the generated shard notebooks here, in a Kaggle kernel replica")
    hours = ksub.add_parser("hours", help="print each shard's runs, training steps and the step time that fits the "
                            "deadline (a Markdown table)")
    for p in (push, drive, rehearse, hours):
        p.add_argument("params", type=Path, nargs="*" if p is hours else None, help="experiment file")
        p.add_argument("--shard-by", default="model,dataset", help="grid keys that split kernels (default model,dataset)")
    hours.add_argument("--docs", type=Path, default=None, help="rewrite the table in this Markdown file, after its "
                       "`<!-- vadbench kaggle hours X.yaml ... -->` line, for the files named there")
    for p in (push, drive):
        p.add_argument("--accelerator", default=None, help="Kaggle machine shape, e.g. NvidiaTeslaT4 (overrides params)")
    upload = ksub.add_parser("upload-data", help="check a dataset, upload it as your Kaggle dataset (sub-folders "
                             "zipped), wait until ready and print its mounts: line")
    upload.add_argument("dataset", help="dataset kind (as `vadbench data check`)")
    upload.add_argument("root", type=Path, help="the dataset root, written as the experiment's params name it")
    upload.add_argument("--slug", required=True, help="the Kaggle dataset slug (6-50 lowercase letters, digits, hyphens)")
    upload.add_argument("--title", default=None, help="dataset title (default: the slug)")
    upload.add_argument("--licence", default="other", help="licence name of dataset-metadata.json (default other)")
    upload.add_argument("--categories", nargs="+", default=None, help="check only these categories (default: all)")
    upload.add_argument("--wait-s", type=float, default=3600.0, help="how long to wait until ready (default 3600)")
    push.add_argument("--dry-run", action="store_true", help="write the folders, push nothing")
    editor = ksub.add_parser("notebook", help="write one run as a notebook to import and Run All in Kaggle's editor")
    editor.add_argument("params", type=Path, help="experiment file")
    editor.add_argument("--model", required=True, help="model name in the experiment")
    editor.add_argument("--dataset", required=True, help="dataset name in the experiment")
    editor.add_argument("--category", required=True, help="category of that dataset")
    editor.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    push.add_argument("--pending", action="store_true", help="push only runs without a finished record in --runs")
    rehearse.add_argument("--shard", default=None, help="only this shard (its slug, or the slug's start)")
    rehearse.add_argument("--smoke", action="store_true", help="a tiny budget: first category per dataset, 2 steps, 64 px")
    rehearse.add_argument("--deadline-s", type=float, default=None, help="the shards' deadline in seconds (exercise it)")
    logs = ksub.add_parser("logs", help="print a shard kernel's log")
    logs.add_argument("shard", help="the shard's slug (see `vadbench kaggle status`)")
    for name, p in (("push", push), ("status", ksub.add_parser("status", help="list the shards' kernels and states")),
                    ("pull", ksub.add_parser("pull", help="download finished kernels' outputs, merge their records")),
                    ("rehearse", rehearse), ("logs", logs), ("notebook", editor), ("drive", drive), ("hours", hours),
                    ("upload-data", upload)):
        p.add_argument("--kaggle-params", type=Path, default=Path("params/kaggle/kaggle.yaml"),
                       help="Kaggle settings (default params/kaggle/kaggle.yaml)")
        default = "outputs/kaggle-rehearsal" if name == "rehearse" else "outputs/kaggle"
        p.add_argument("--dir", type=Path, default=Path(default), help=f"kernel folders (default {default})")
        if name in ("status", "pull"):
            p.add_argument("--experiment", default=None, help="only this experiment's shards (its name)")
        if name in ("pull", "push", "rehearse", "drive"):
            p.add_argument("--runs", type=Path, default=Path("outputs/runs"), help="runs root (default outputs/runs)")
    rehearse.add_argument("--pull", action="store_true", help="merge the rehearsal's records into --runs")
    standin = ksub.add_parser("standin", help="a local stand-in for the Kaggle service: the real kaggle client talks "
                              "to it, pushed kernels run here in the /kaggle replica")
    standin.add_argument("--port", type=int, default=7777, help="port (default 7777, kagglesdk's TEST port; 0: a free one)")
    standin.add_argument("--dataset", action="append", default=[], metavar="OWNER/SLUG=DIR",
                         help="a public dataset the kernels can attach, its files DIR (repeat for more)")
    standin.add_argument("--gpu-sessions", type=int, default=2, help="GPU batch sessions at once per account (default 2)")
    standin.add_argument("--quota-hours", type=float, default=30.0, help="weekly GPU hours per account (default 30)")
    standin.add_argument("--log", type=Path, default=None, help="write one JSON line per event to this file")
    standin.add_argument("--state", type=Path, default=Path("outputs/kaggle-standin"),
                         help="folder for uploads, datasets and kernel sessions (default outputs/kaggle-standin)")
    standin.add_argument("--processing-s", type=float, default=2.0, help="seconds a dataset version takes to process")
    standin.add_argument("--queue-s", type=float, default=1.0, help="seconds a pushed kernel stays queued")


def _kaggle(args: argparse.Namespace) -> int:
    from vadbench.launch.kaggle import pull, push

    if args.kaggle_command == "push":
        shards = push.push(args.params, args.dir, args.kaggle_params, args.shard_by.split(","),
                           args.accelerator, dry_run=args.dry_run, pending_in=args.runs if args.pending else None)
        log.info("%d shard(s) written, %d runs", len(shards), sum(len(s.runs) for s in shards))
        return 0
    if args.kaggle_command in ("drive", "hours", "upload-data"):
        return _kaggle_loop(args)
    if args.kaggle_command == "notebook":
        from vadbench.launch.kaggle.editor import write_editor_notebook

        write_editor_notebook(args.params, args.model, args.dataset, args.category, args.seed, args.dir,
                              args.kaggle_params)
        return 0
    if args.kaggle_command == "rehearse":
        from vadbench.launch.kaggle import rehearse

        done = rehearse.rehearse(args.params, args.kaggle_params, args.shard, args.smoke, args.deadline_s,
                                 args.dir, args.shard_by.split(","))
        if args.pull:
            rehearse.pull_rehearsal(args.runs, args.dir)
        return 0 if all(s["ok"] for s in done) else 1
    if args.kaggle_command == "standin":
        from vadbench.errors import KaggleSetupError
        from vadbench.launch.kaggle.standin import wire

        datasets = dict(item.split("=", 1) for item in args.dataset if "=" in item)
        if len(datasets) != len(args.dataset):
            raise KaggleSetupError("--dataset takes OWNER/SLUG=DIR")
        wire.serve(wire.Standin(args.state, args.port, datasets={k: Path(v) for k, v in datasets.items()},
                                gpu_sessions=args.gpu_sessions, quota_hours=args.quota_hours, log_path=args.log,
                                processing_s=args.processing_s, queue_s=args.queue_s))
        return 0
    if args.kaggle_command == "logs":
        sys.stdout.write(pull.logs(args.shard, args.dir) + "\n")
        return 0
    if args.kaggle_command == "status":
        pull.status(args.dir, args.experiment)
        return 0
    if args.kaggle_command == "pull":
        return pull.pull(args.dir, args.runs, args.experiment).exit_code
    raise ValueError(f"kaggle command {args.kaggle_command!r} has a parser but no handler in cli._kaggle")


def _kaggle_loop(args: argparse.Namespace) -> int:
    """`kaggle drive`, `kaggle hours` and `kaggle upload-data`."""
    if args.kaggle_command == "hours":
        from vadbench.launch.kaggle.hours import hours_table, write_docs_table
        from vadbench.launch.kaggle.spec import load_kaggle_spec

        spec, shard_by = load_kaggle_spec(args.kaggle_params), args.shard_by.split(",")
        if args.docs is not None:
            write_docs_table(args.docs, spec, shard_by)
            return 0
        if not args.params:
            from vadbench.errors import ConfigError

            raise ConfigError("kaggle hours: name experiment files, or --docs FILE")
        sys.stdout.write(hours_table(args.params, spec, shard_by) + "\n")
        return 0
    if args.kaggle_command == "upload-data":
        from vadbench.launch.kaggle.upload import upload_data

        entry = upload_data(args.dataset, args.root, args.slug, args.kaggle_params, args.dir, args.title, args.licence,
                            args.categories, wait_s=args.wait_s)
        sys.stdout.write(f"mounts:\n  {entry}\n")
        return 0
    from vadbench.launch.kaggle.drive import drive

    try:
        return drive(args.params, args.dir, args.kaggle_params, args.shard_by.split(","), args.runs,
                     accelerator=args.accelerator).exit_code
    except KeyboardInterrupt:
        print(f"vadbench: drive interrupted: every push and pull so far is in {args.dir}/<experiment>/shards.json; "
              f"`vadbench kaggle drive {args.params}` goes on from there", file=sys.stderr)
        return 130


def _distill_parser(sub: argparse._SubParsersAction) -> None:
    from vadbench.config import DistillParams, EfficientAdParams

    d, e = DistillParams(), EfficientAdParams()
    p = sub.add_parser("distill-teacher", help="distil an EfficientAD teacher (PDN) from a pretrained backbone, offline")
    p.add_argument("--backbone", default=d.backbone,
                   help="mobilenet_v2 (offline package), a torchvision arch in the hub cache (wide_resnet101_2), "
                        f"or <arch>:<weights.pth> (default {d.backbone})")
    p.add_argument("--images", type=Path, required=True, help="folder of natural photos (searched recursively)")
    p.add_argument("--size", choices=["small", "medium"], default=e.model_size, help="PDN size (default small)")
    p.add_argument("--out", type=Path, required=True, help="teacher file (.pth); its record goes beside it (.json)")
    p.add_argument("--steps", type=int, default=d.steps, help=f"Adam steps (default {d.steps}; the paper: 60000)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"default {d.batch_size}")
    p.add_argument("--crop", type=int, default=d.crop, help=f"PDN training crop, px (default {d.crop}; paper 256)")
    p.add_argument("--image-size", type=int, default=d.image_size, help=f"images' shorter side, px (default {d.image_size})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"default {d.lr}")
    p.add_argument("--layers", default="", help="comma-separated backbone layers (default: per backbone)")
    p.add_argument("--out-channels", type=int, default=e.teacher_out_channels, help=f"default {e.teacher_out_channels}")
    p.add_argument("--seed", type=int, default=d.seed, help=f"default {d.seed}")


def _distill_teacher(args: argparse.Namespace) -> int:
    from vadbench.models.distill import DistillSettings, distil_teacher

    settings = DistillSettings(
        backbone=args.backbone, images=str(args.images), model_size=args.size, out_channels=args.out_channels,
        steps=args.steps, batch_size=args.batch_size, crop=args.crop, image_size=args.image_size, lr=args.lr,
        layers=[x for x in args.layers.split(",") if x], seed=args.seed)
    record = distil_teacher(settings, args.out)
    log.info("teacher %s: final distillation loss %.4f (first step %.4f)", args.out, record["final_loss"],
             record["initial_loss"])
    return 0


def _fetch_backbone(args: argparse.Namespace) -> int:
    import json

    from vadbench.models.backbones import fetch

    for facts in fetch(args.arch, args.source):
        sys.stdout.write(json.dumps(facts) + "\n")
    return 0


def _run(args: argparse.Namespace) -> int:
    from vadbench.launch.runner import run_experiment

    result = run_experiment(args.params, args.output, force=args.force, dry_run=args.dry_run,
                            workers=args.workers, launcher=args.launcher, slurm_params=args.slurm_params)
    return result.exit_code


def _report(args: argparse.Namespace) -> int:
    if args.markdown is not None:
        from vadbench.report.markdown import write_results_markdown

        log.info("results: %s", write_results_markdown(args.runs, args.markdown))
        return 0
    from vadbench.report.build import build_report

    paths = build_report(args.runs, args.out)
    for name, path in paths.items():
        log.debug("%s: %s", name, path)  # every file with -v
    tables = [p for p in paths.values() if p.parent.name == "tables"]
    figures = [p for p in paths.values() if p.parent.name == "figures"]
    out = paths["html"].parent
    log.info("report: %s%s; %d tables in %s, %d figures in %s", paths["html"], f", {paths['pdf']}" if "pdf" in paths else "",
             len(tables), out / "tables", len(figures), out / "figures")
    return 0


def _demo_data(args: argparse.Namespace) -> int:
    from vadbench.data import demo

    dataset = demo.build_demo_dataset(args.root / "demo")
    penalty = demo.build_penalty_images(args.root / "demo_penalty")
    source = demo.build_anomaly_source(args.root / "demo_anomaly_source")
    log.info("demo dataset: %s (%s)", args.root / "demo", ", ".join(dataset.get("categories", [])))
    log.info("penalty images (Imagenette stand-in): %s", penalty)
    log.info("anomaly source (DTD stand-in): %s", source)
    return 0


def _data(args: argparse.Namespace) -> int:
    from vadbench import registry
    from vadbench.data import checks

    if args.data_command == "where":
        sys.stdout.write(registry.where_text(args.dataset) + "\n")
        return 0
    root = args.root if args.root is not None else Path(registry.resolve_root(args.dataset, None))
    result = checks.check_dataset(args.dataset, root, args.categories)
    sys.stdout.write(result.table() + "\n")
    result.raise_if_failed()
    log.info("%s at %s: %d categories checked, no problem", args.dataset, root, len(result.categories))
    return 0


COMMANDS = {"run": _run, "report": _report, "speed": _speed, "demo-data": _demo_data, "kaggle": _kaggle, "data": _data,
            "distill-teacher": _distill_teacher, "fetch-backbone": _fetch_backbone}


def main(argv: list[str] | None = None) -> int:
    """Entry point; known input errors and OSErrors print one line (naming the fix or the path) and exit 2."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    quiet.set_verbose(args.verbose or quiet.verbose())
    from vadbench.errors import USER_ERRORS

    try:
        return COMMANDS[args.command](args)
    except (*USER_ERRORS, OSError) as exc:  # an OSError's text names its path
        if args.verbose:
            raise
        print(f"vadbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vadbench: interrupted: finished runs are kept, the unfinished one left nothing behind; "
              "rerun to do the rest", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
