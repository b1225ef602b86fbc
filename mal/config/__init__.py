"""One typed config: every params section's keys, types, defaults and one-line docs, defined once.

    from mal.config import load_params
    params = load_params("params.yaml")          # validated, frozen; params.pseudo_label.batch_size
    params = load_params("params.yaml", ["labeler.train.epochs=3"])   # overrides, as `dvc exp run -S`

params.yaml is read as YAML 1.2 (ruamel, as DVC reads it: ``5e-6`` is a number) and validated in one pass; any
unknown key, wrong type or out-of-range value raises :class:`ParamsError`, one line per problem naming the file,
the dotted key, what is expected and the value given — before a stage does any work. The sections live with
their pipeline phase (:mod:`mal.config.data`, ``labeler``, ``pseudo``, ``quality``, ``detector``, ``table``,
``prefect``, ``run``); why pydantic: :mod:`mal.config.base`. docs/config.md lists every key.
"""

from __future__ import annotations

from mal.config.load import ParamsError, load_params, parse_overrides, run_main

__all__ = ["ParamsError", "load_params", "parse_overrides", "run_main"]  # the model: mal.config.params.Params
