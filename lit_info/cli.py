"""Command-line entry point: ``python -m lit_info.cli fit --config configs/<method>/<exp>.yaml``.

A :class:`lightning.pytorch.cli.LightningCLI` in subclass mode for both model and data, so any
lit_info LightningModule / LightningDataModule can be chosen by ``class_path`` in YAML.

Values that the data knows (number of classes, input shape, ...) reach the model without being
written in the config: a datamodule declares them in ``model_hints()`` and, before the classes
are instantiated, every hint that names an ``__init__`` parameter of the chosen model and is not
set in the config is filled in. (A static ``link_arguments`` cannot do this in subclass mode:
the target parameter must exist on every model class that may be chosen, and not all methods
take ``num_classes``.)
"""

from __future__ import annotations

import inspect
import os
import sys
from typing import Any

import lightning.pytorch as pl
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningCLI

# Import the modules so their classes are registered as LightningModule/DataModule subclasses
# and can be named by their short class names in configs.
import lit_info.data  # noqa: F401
import lit_info.methods  # noqa: F401


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


class LitInfoCLI(LightningCLI):
    """LightningCLI that fills model arguments from the datamodule's ``model_hints()``."""

    def before_instantiate_classes(self) -> None:
        """Copy the datamodule's hints into the model's ``init_args``."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        model_cfg = config.get("model")
        hints = data_hints_for_model(config.get("data"), model_cfg)
        for name, value in hints.items():
            if model_cfg.get("init_args") is None:
                model_cfg.init_args = Namespace()
            model_cfg.init_args[name] = list(value) if isinstance(value, tuple) else value

    def _check_data_files(self) -> None:
        """Check the data files before the trainer writes logs, configs or checkpoints."""
        check = getattr(self.datamodule, "check_files", None)
        if callable(check):
            check()

    before_fit = before_validate = before_test = before_predict = _check_data_files


def main(args: list[str] | None = None, run: bool = True) -> LitInfoCLI:
    """Run the lit_info command line.

    Args:
        args: command-line arguments (default: ``sys.argv[1:]``).
        run: run the subcommand (``fit``, ``validate``, ``test``, ``predict``) when true.

    Returns:
        The CLI object (its ``trainer``, ``model`` and ``datamodule`` are set).
    """
    return LitInfoCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
        auto_configure_optimizers=False,
    )


def entry() -> None:
    """Console entry point: like :func:`main`, but input errors end with a one-line message.

    Errors about the user's input (missing or damaged data files, bad argument values, a loss
    that became NaN) are printed without a traceback and exit with status 1; set
    ``LIT_INFO_TRACEBACK=1`` to see the traceback.
    """
    from lit_info.methods.base import NonFiniteLossError

    try:
        main()
    except (FileNotFoundError, ValueError, NonFiniteLossError) as err:
        if os.environ.get("LIT_INFO_TRACEBACK"):
            raise
        print(f"lit_info: error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    entry()
