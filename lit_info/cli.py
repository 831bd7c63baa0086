"""Command line: ``python -m lit_info fit --config configs/<method>/<experiment>.yaml``.

A :class:`lightning.pytorch.cli.LightningCLI` in subclass mode for both model and data, so any
lit_info LightningModule / LightningDataModule can be chosen by ``class_path`` in YAML, plus:

- ``python -m lit_info list``: the methods, datamodules, networks and callbacks, one line each.
- Values that the data knows (number of classes, input shape, ...) reach the model without being
  written in the config: a datamodule declares them in ``model_hints()`` and, before the classes
  are instantiated, every hint that names an ``__init__`` parameter of the chosen model and is
  not set in the config is filled in (``--print_config`` shows them). A static
  ``link_arguments`` cannot do this in subclass mode: the target parameter must exist on every
  model class that may be chosen, and not all methods take ``num_classes``.
- Run folders (:mod:`lit_info.runs`): every run writes into its own folder under
  ``trainer.default_root_dir`` (default ``runs``), nothing overwrites an earlier run, resuming
  continues in the run it resumes, and evaluations write next to what they evaluated.
- Errors about the user's input end in one line (``lit_info: error: ...``), never a usage dump
  or a traceback, and are raised before anything is written.
"""

from __future__ import annotations

import datetime
import inspect
import json
import logging
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any, NoReturn

import lightning.pytorch as pl
from jsonargparse import DefaultHelpFormatter, Namespace
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities.model_helpers import is_overridden

# Import the modules so their classes are registered as LightningModule/DataModule subclasses
# and can be named by their short class names in configs.
import lit_info.data  # noqa: F401
import lit_info.methods  # noqa: F401
from lit_info import runs
from lit_info.callbacks.predictions import PredictionWriter
from lit_info.loggers import DEFAULT_ROOT_DIR


def program_name() -> str:
    """How the user started the program: ``lit-info`` (console script) or ``python -m lit_info``."""
    return "lit-info" if Path(sys.argv[0]).name == "lit-info" else "python -m lit_info"


def _import_class(class_path: str) -> type:
    module_name, _, name = class_path.rpartition(".")
    module = __import__(module_name, fromlist=[name])
    return getattr(module, name)


def data_hints_for_model(data_cfg: Namespace | None, model_cfg: Namespace | None) -> dict:
    """Hints of the configured datamodule that the configured model accepts and lacks.

    Args:
        data_cfg: the ``data`` namespace of a parsed config (``class_path`` + ``init_args``).
        model_cfg: the ``model`` namespace of a parsed config.

    Returns:
        ``{parameter: value}`` to set in the model's ``init_args``.
    """
    if data_cfg is None or model_cfg is None or not hasattr(data_cfg, "class_path"):
        return {}
    data_cls = _import_class(data_cfg.class_path)
    if not hasattr(data_cls, "model_hints"):
        return {}
    init_args = dict(getattr(data_cfg, "init_args", None) or {})
    datamodule = data_cls(**init_args)
    hints: dict[str, Any] = datamodule.model_hints()
    model_cls = _import_class(model_cfg.class_path)
    accepted = inspect.signature(model_cls.__init__).parameters
    model_args = getattr(model_cfg, "init_args", None)
    return {
        name: value
        for name, value in hints.items()
        if name in accepted and (model_args is None or getattr(model_args, name, None) is None)
    }


def fill_data_hints(config: Namespace) -> None:
    """Write the datamodule's hints into the model's ``init_args`` of one subcommand's config."""
    model_cfg = config.get("model")
    for name, value in data_hints_for_model(config.get("data"), model_cfg).items():
        if model_cfg.get("init_args") is None:
            model_cfg.init_args = Namespace()
        model_cfg.init_args[name] = list(value) if isinstance(value, tuple) else value


# -- parse errors in one line ------------------------------------------------------------------
def _clean_type(text: str) -> str:
    text = re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", text)
    return re.sub(r"typing\.Literal\[(.*)\]", r"one of \1", text)


def summarize_parse_error(message: str) -> str:
    """The one line that matters of a jsonargparse error message.

    jsonargparse explains a bad value through every branch of the type it tried (the Union of a
    class and None, the class's own parser, ...). This keeps the dotted key, the class and the
    innermost reason, e.g. ``data.noise_level: expected float, got 'abc'``.

    Args:
        message: the message jsonargparse passes to ``ArgumentParser.error``.

    Returns:
        One line.
    """
    keys: list[str] = []
    class_path = detail = given = None
    expected: list[str] = []
    for raw in message.strip().splitlines():
        line = raw.strip().removeprefix("- ").strip()
        if not line:
            continue
        if m := re.match(r'Parser key "([^"]+)":\s*(.*)$', line):
            keys.append(m.group(1))
            if m.group(2) and detail is None:
                detail = m.group(2)
            continue
        if m := re.match(r"Problem with given class_path '([^']+)'", line):
            class_path = m.group(1)
            continue
        if line.startswith(("Does not validate", "Subtypes:", "Errors:", "Given value type:")):
            continue
        if m := re.match(r"Given value:\s*(.*)$", line):
            nested = re.match(r"NestedArg\(key='([^']*)', val='(.*)'\)$", m.group(1))
            given = nested.group(2) if nested else m.group(1)
            continue
        if m := re.match(r"Expected a (.*?)(?:\. Got value: (.*))?$", line):
            kind = _clean_type(m.group(1))
            if kind != "NoneType" or not expected:
                expected.append(kind)
            if m.group(2) is not None:
                given = m.group(2)
                detail = None if detail is None else detail
            continue
        if detail is None:
            detail = line
    if detail is not None and (m := re.match(r"Option '([^']+)' is not accepted", detail)):
        keys.append(m.group(1))
        detail = "no such argument" + (f" of {class_path}" if class_path else "")
    if detail is None and expected:
        kinds = [k for k in expected if k != "NoneType"] or expected
        detail = f"expected {' or '.join(kinds)}" + ("" if given is None else f", got {given!r}")
    key = ".".join(k for k in keys if k != "config" or len(keys) == 1)
    if not keys:
        return detail or message.strip().splitlines()[0]
    return f"{key}: {detail or 'invalid value'}"


_RST_ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|obj):`~?(?:[\w.]+\.)?([^`.]+)`")


def strip_rst(text: str) -> str:
    """Help text without reStructuredText markup (``x`` -> x, :func:`a.b` -> b)."""
    text = _RST_ROLE.sub(r"\1", text)
    return re.sub(r"``([^`]+)``", r"\1", text)


class LitInfoHelpFormatter(DefaultHelpFormatter):
    """jsonargparse's help formatter, minus the reStructuredText markup of the docstrings."""

    def _get_help_string(self, action: Any) -> str | None:
        text = super()._get_help_string(action)
        return None if text is None else strip_rst(text)

    def _format_usage(self, *args: Any, **kwargs: Any) -> str:
        return strip_rst(super()._format_usage(*args, **kwargs))

    def add_text(self, text: str | None) -> None:
        """Descriptions (class docstrings) without markup."""
        super().add_text(None if text is None else strip_rst(text))


class LitInfoArgumentParser(LightningArgumentParser):
    """LightningCLI's parser, whose errors are one line and a hint instead of a usage dump."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        """Print ``<prog>: error: <one line>`` and a ``--help`` hint, then exit with status 2."""
        if not self.exit_on_error or os.environ.get("LIT_INFO_TRACEBACK"):
            super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        prog = parser.prog.replace(" [options]", "")
        sys.stderr.write(
            f"{program_name()}: error: {summarize_parse_error(message)}\n"
            f"  (all options: {prog} --help; one class's arguments: --model.help CLASS; "
            f"the classes: {program_name()} list)\n"
        )
        sys.exit(2)


class SaveConfigOnce(SaveConfigCallback):
    """Lightning's config saver that never replaces a config file already in the run folder.

    A fresh run folder gets ``config.yaml``; a resumed run's folder (or a folder shared by runs
    without a logger) gets the first free ``config_resume<k>.yaml`` instead.
    """

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Pick a free file name in the log dir, then save as Lightning does."""
        log_dir = trainer.log_dir  # a collective under DDP: every rank calls setup
        if log_dir is not None and self.config_filename == "config.yaml":
            self.config_filename = runs.resume_config_name(log_dir)
        super().setup(trainer, pl_module, stage)


# -- the CLI ----------------------------------------------------------------------------------
class LitInfoCLI(LightningCLI):
    """LightningCLI with data hints, run folders that are never overwritten, and clear errors."""

    run_dir: Path | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._checkpoint: dict | None = None
        self._default_logger: Namespace | None = None
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Runs go under ``runs/`` unless ``--trainer.default_root_dir`` says otherwise."""
        parser.set_defaults({"trainer.default_root_dir": DEFAULT_ROOT_DIR})

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse; ``--print_config`` prints the config with the data's hints filled in."""
        argv = list(sys.argv[1:] if args is None else args) if not isinstance(args, dict) else None
        flags = [a for a in argv or [] if a == "--print_config" or a.startswith("--print_config=")]
        if not flags:
            super().parse_arguments(parser, args)
            return
        self.config = parser.parse_args([a for a in argv if a not in flags])
        sub = self.config.get("subcommand")
        config = self.config[sub] if sub else self.config
        fill_data_hints(config)
        target = self._parser(sub)
        skip_none = "skip_null" in flags[-1]
        sys.stdout.write(target.dump(config, skip_none=skip_none, skip_check=True))
        sys.exit(0)

    # checkpoint and run folder, before anything is instantiated
    def _parse_ckpt_path(self) -> None:
        """Resolve the run folder and ``--ckpt_path`` (``last``/``best``, checked for damage)."""
        sub = self.config.get("subcommand")
        # main(run=False) has no subcommand: the caller fits, so place it like a new fit
        self._resolve_run(sub or "fit", self.config[sub] if sub else self.config)
        if self._checkpoint is None:
            return
        # the checkpoint's hyper-parameters complete the model config, as LightningCLI does,
        # from the copy read above (one read, with this project's safe loader)
        hparams = dict(self._checkpoint.get("hyper_parameters") or {})
        hparams.pop("_instantiator", None)
        if not hparams:
            return
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        patch = {sub: {"model": hparams}} if sub else {"model": hparams}
        self.config = self.parser.parse_object(patch, self.config)

    def _logger_config(self, config: Namespace, root_dir: str) -> Namespace | None:
        """The first logger's ``init_args`` with ``save_dir`` filled in (None: no logger).

        Without a logger in the config (``logger: null`` or ``true``), Lightning's default
        TensorBoard logger is placed here too: its arguments are kept in ``_default_logger``
        and the logger is built in :meth:`instantiate_trainer`.
        """
        logger = config.trainer.get("logger")
        if logger is None or logger is True:
            self._default_logger = Namespace(save_dir=root_dir, name="lightning_logs")
            return self._default_logger
        first = logger[0] if isinstance(logger, list) and logger else logger
        if not isinstance(first, Namespace) or "init_args" not in first:
            return None
        init = first.init_args
        if "save_dir" in init and not init.get("save_dir"):
            init.save_dir = root_dir
        return init if "save_dir" in init and "version" in init else None

    def _resolve_run(self, sub: str, config: Namespace) -> None:
        root_dir = str(config.trainer.get("default_root_dir") or DEFAULT_ROOT_DIR)
        config.trainer.default_root_dir = root_dir
        logger = self._logger_config(config, root_dir)
        ckpt_path = self._resolve_ckpt_path(sub, config, logger)
        inherited = os.environ.get(runs.RUN_DIR_ENV)
        if inherited and int(os.environ.get("LOCAL_RANK", "0") or 0) > 0 and logger is not None:
            save_dir, name, version = json.loads(inherited)  # a DDP worker: the launcher's folder
            logger.save_dir, logger.name, logger.version = save_dir, name, version
            self.run_dir = Path(save_dir, name, version)
        if self.run_dir is not None or logger is None:
            return
        init = logger
        name = init.get("name") or ""
        base = Path(init.save_dir, name)
        run_of_ckpt = None
        if ckpt_path is not None:
            run_of_ckpt = runs.run_dir_of_checkpoint(ckpt_path, self._checkpoint)
        if sub == "fit" and run_of_ckpt is not None:
            run_dir = run_of_ckpt  # SaveConfigOnce saves config_resume<k>.yaml there
        elif sub == "fit":
            version = init.get("version")
            if version is None:
                run_dir = base / f"version_{runs.next_version(base)}"
            else:
                run_dir = base / (version if isinstance(version, str) else f"version_{version}")
                if runs.holds_run(run_dir):
                    raise ValueError(
                        f"run folder {run_dir} already holds an earlier run; leave "
                        "trainer.logger.init_args.version unset for the next free version_N, "
                        f"choose another, or resume it with --ckpt_path {run_dir}/checkpoints/"
                        "last.ckpt"
                    )
        else:
            stem = "" if ckpt_path is None else f"_{Path(ckpt_path).stem}"
            eval_base = (run_of_ckpt or base) / f"{sub}{stem}"
            run_dir = eval_base / f"version_{runs.next_version(eval_base)}"
        if run_dir.parent.resolve() == base.resolve():
            init.name, init.version = name, run_dir.name
        else:
            init.save_dir, init.name, init.version = str(run_dir.parent), "", run_dir.name
        self.run_dir = run_dir
        os.environ[runs.RUN_DIR_ENV] = json.dumps([init.save_dir, init.name, init.version])

    def _resolve_ckpt_path(self, sub: str, config: Namespace, logger: Namespace | None) -> Any:
        """Turn ``last``/``best`` into a file, check the file, and keep its content."""
        ckpt_path = config.get("ckpt_path")
        trusted = config.get("weights_only") is False
        trainer = config.trainer
        if ckpt_path in ("last", "best"):
            if sub == "fit" and trainer.get("enable_checkpointing") is False:
                raise ValueError(
                    f"--ckpt_path {ckpt_path}: this config saves no checkpoints "
                    "(trainer.enable_checkpointing: false), so there is nothing to resume; "
                    "train with --trainer.enable_checkpointing true to save last.ckpt"
                )
            if logger is None:
                raise ValueError(f"--ckpt_path {ckpt_path} needs a logger to find the run folder")
            base = Path(logger.save_dir, logger.get("name") or "")
            found = runs.find_checkpoint(base, ckpt_path)
            if found is None and sub == "fit" and ckpt_path == "last":
                pl.utilities.rank_zero_info(
                    f"lit_info: no checkpoint under {base}/*/checkpoints/ yet; starting a new run"
                )
                config.ckpt_path = None
                return None
            if found is None:
                raise FileNotFoundError(
                    f"--ckpt_path {ckpt_path}: no {ckpt_path}*.ckpt under {base}/*/checkpoints/ "
                    "(train this config first, or pass the checkpoint's path)"
                )
            config.ckpt_path = ckpt_path = str(found)
        elif ckpt_path is None and sub == "fit" and SLURMEnvironment.detect():
            hpc = sorted(Path(trainer.default_root_dir).glob("hpc_ckpt_*.ckpt"))
            if hpc:  # Lightning resumes from it by itself: continue in that run's folder
                ckpt_path = str(max(hpc, key=lambda p: int(re.sub(r"\D", "", p.stem) or 0)))
        if ckpt_path is None or ckpt_path == "hpc":
            return None
        self._checkpoint = runs.inspect_checkpoint(ckpt_path, trusted=trusted)
        return ckpt_path

    def before_instantiate_classes(self) -> None:
        """Copy the datamodule's hints into the model's ``init_args``."""
        fill_data_hints(self.config[self.subcommand] if self.subcommand else self.config)

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        """Add the run-folder recorder (every run) and the prediction writer (``predict``)."""
        if self._default_logger is not None and "logger" not in kwargs:
            from lightning.pytorch.loggers import TensorBoardLogger

            kwargs["logger"] = TensorBoardLogger(**dict(self._default_logger))
        trainer = super().instantiate_trainer(**kwargs)
        trainer.callbacks.append(runs.RunFolderRecorder())
        if self.subcommand == "predict" and not any(
            isinstance(c, PredictionWriter) for c in trainer.callbacks
        ):
            trainer.callbacks.append(PredictionWriter())
        return trainer

    # -- subcommands ----------------------------------------------------------------------------
    def _check_data_files(self) -> None:
        """Check the data files before the trainer writes logs, configs or checkpoints."""
        check = getattr(self.datamodule, "check_files", None)
        if callable(check):
            check()
        check_trainer = getattr(self.datamodule, "check_trainer", None)
        if callable(check_trainer):
            check_trainer(self.trainer)

    def fit(self, **kwargs: Any) -> None:
        """``trainer.fit`` after the data check; then one line says where the run went."""
        self._check_data_files()
        self.trainer.fit(**kwargs)
        self._report("fit")

    def validate(self, **kwargs: Any) -> list[dict[str, float]]:
        """``trainer.validate``; the metrics go to ``metrics.json`` in the evaluation folder."""
        self._check_data_files()
        metrics = self.trainer.validate(**kwargs)
        self._write_metrics("validate", metrics, kwargs.get("ckpt_path"))
        return metrics

    def test(self, **kwargs: Any) -> list[dict[str, float]]:
        """``trainer.test``; the metrics go to ``metrics.json`` in the evaluation folder."""
        self._check_data_files()
        metrics = self.trainer.test(**kwargs)
        self._write_metrics("test", metrics, kwargs.get("ckpt_path"))
        return metrics

    def predict(self, **kwargs: Any) -> Any:
        """``trainer.predict``; per-sample predictions go to ``predictions.csv``."""
        datamodule = self.datamodule
        if datamodule is not None and not is_overridden(
            "predict_dataloader", datamodule, pl.LightningDataModule
        ):
            raise ValueError(
                f"predict is not available for {type(datamodule).__name__}: it defines no "
                "predict_dataloader"
            )
        self._check_data_files()
        out = self.trainer.predict(**kwargs)
        self._report("predict")
        return out

    def _log_dir(self) -> Path | None:
        """The run folder, without ``trainer.log_dir``'s collective broadcast (rank 0 only)."""
        loggers = self.trainer.loggers
        if not loggers:
            return None
        log_dir = getattr(loggers[0], "log_dir", None) or loggers[0].save_dir
        return None if log_dir is None else Path(log_dir)

    def _write_metrics(self, sub: str, metrics: list[dict[str, float]], ckpt: Any) -> None:
        log_dir = self._log_dir()
        if self.trainer.is_global_zero and log_dir is not None:
            path = log_dir / "metrics.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            record = {
                "subcommand": sub,
                "ckpt_path": None if ckpt is None else str(ckpt),
                "time": datetime.datetime.now().isoformat(timespec="seconds"),
                "metrics": metrics,
            }
            tmp = path.with_name("metrics.json.tmp")
            tmp.write_text(json.dumps(record, indent=2) + "\n")
            os.replace(tmp, path)
        self._report(sub)

    def _report(self, sub: str) -> None:
        """One line: the run folder, its checkpoints and per-sample files."""
        run_dir = self._log_dir()
        if not self.trainer.is_global_zero or run_dir is None:
            return
        files = sorted(
            p.name for p in run_dir.glob("*") if p.is_file() and not p.name.startswith("events.")
        )
        parts = [f"lit_info: {sub} wrote {run_dir}/"]
        ckpts = sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt"))
        if ckpts:
            parts.append(f"checkpoints/: {', '.join(ckpts)}")
        if files:
            parts.append(f"files: {', '.join(files)}")
        parts.append("TensorBoard events" if list(run_dir.glob("events.*")) else "")
        print(" | ".join(p for p in parts if p), file=sys.stderr, flush=True)


def _quiet_lightning_notices() -> None:
    """Silence notices a user cannot act on, not warnings about the run itself."""

    class _DropTips(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return not str(record.getMessage()).startswith("💡 Tip:")

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropTips) for f in log.filters):
            log.addFilter(_DropTips())
    # a deprecation inside Lightning's own pytree helper (torch >= 2.9), not in user code
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


def list_components(out: Any = None) -> None:
    """Print the methods, datamodules, networks and callbacks, one line each.

    Args:
        out: a text stream (default: stdout).
    """
    import lit_info.callbacks as callbacks
    from lit_info.nets import NET_DESCRIPTIONS

    out = out or sys.stdout

    def first_line(obj: Any) -> str:
        doc = inspect.getdoc(obj) or ""
        return re.sub(r":\w+:`~?([^`]+)`|``([^`]+)``", r"\1\2", doc.split("\n\n")[0]).replace(
            "\n", " "
        )

    sections = [
        ("methods (--model)", lit_info.methods, pl.LightningModule),
        ("datamodules (--data)", lit_info.data, pl.LightningDataModule),
        ("callbacks (--trainer.callbacks)", callbacks, pl.Callback),
    ]
    for title, module, base in sections:
        print(f"{title}:", file=out)
        for name in module.__all__:
            obj = getattr(module, name)
            if isinstance(obj, type) and issubclass(obj, base) and not inspect.isabstract(obj):
                print(f"  {module.__name__ + '.' + name:<40} {first_line(obj)}", file=out)
    print("networks (--model.net):", file=out)
    for name, text in NET_DESCRIPTIONS.items():
        print(f"  {name:<40} {text}", file=out)
    print(
        f"\nArguments of one class: {program_name()} fit --model.help CLASS (or --data.help CLASS)",
        file=out,
    )


def main(args: list[str] | None = None, run: bool = True) -> LitInfoCLI | None:
    """Run the lit_info command line.

    Args:
        args: command-line arguments (default: ``sys.argv[1:]``).
        run: run the subcommand (``fit``, ``validate``, ``test``, ``predict``) when true.

    Returns:
        The CLI object (its ``trainer``, ``model`` and ``datamodule`` are set); None for
        ``list``.
    """
    argv = sys.argv[1:] if args is None else args
    if argv and argv[0] == "list":
        list_components()
        return None
    _quiet_lightning_notices()
    prog = program_name()
    return LitInfoCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        parser_class=LitInfoArgumentParser,
        save_config_callback=SaveConfigOnce,
        parser_kwargs={
            "prog": prog,
            "formatter_class": LitInfoHelpFormatter,
            "description": (
                "lit_info: information-theoretic deep learning with PyTorch Lightning. "
                f"`{prog} list` shows the methods, datamodules, networks and callbacks; "
                f"`{prog} fit --config configs/<method>/<experiment>.yaml` trains one experiment "
                "into its own run folder under runs/."
            ),
        },
        save_config_kwargs={"overwrite": False},
        args=args,
        run=run,
        auto_configure_optimizers=False,
    )


def entry() -> None:
    """Console entry point: like :func:`main`, but input errors end with a one-line message.

    Errors about the user's input (missing or damaged data or checkpoint files, bad argument
    values, a Lightning configuration error, a loss that became NaN) are printed without a
    traceback and exit with status 1; set ``LIT_INFO_TRACEBACK=1`` to see the traceback.
    """
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from lit_info.methods.base import NonFiniteLossError

    if getattr(sys.modules["__main__"], "__spec__", None) is not None:
        # `python -m lit_info`: argparse names every (sub)parser after argv[0] ("__main__.py");
        # Lightning relaunches DDP workers from __spec__ in this case, not from argv[0]
        sys.argv[0] = "python -m lit_info"
    try:
        main()
    except (FileNotFoundError, ValueError, NonFiniteLossError, MisconfigurationException) as err:
        if os.environ.get("LIT_INFO_TRACEBACK"):
            raise
        print(f"lit_info: error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    entry()
