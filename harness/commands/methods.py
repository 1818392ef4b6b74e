"""``ebm-bench methods``: every registered training method, its description, default
hyperparameters and the models it supports."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser("methods", help="list the training methods", description=__doc__)
    parser.add_argument("--format", choices=("table", "csv"), default="table")
    parser.set_defaults(func=main)


def supported_models(method) -> str:
    """The models ``method.check`` accepts on a small space of each kind."""
    from ebm.spaces import MODELS, make_space
    from harness.records import Status

    out = []
    for kind, models in MODELS.items():
        for model in models:
            verdict = method.check(make_space(kind, 4, model), model, method.params())
            if verdict is None or verdict[0] != Status.UNSUPPORTED:
                out.append(model)
    return " ".join(out)


def method_rows(*, all_defaults: bool) -> list[dict]:
    """One row per method; the table shows only the defaults beyond the shared optimiser and
    architecture ones (``ebm.training.COMMON_DEFAULTS``), CSV shows all of them."""
    import json

    from baselines.registry import list_methods
    from ebm.training import COMMON_DEFAULTS

    rows = []
    for m in list_methods():
        defaults = {k: v for k, v in m.defaults.items() if all_defaults or COMMON_DEFAULTS.get(k, object()) != v}
        rows.append({"method": m.name, "description": m.description, "models": supported_models(m),
                     "defaults": json.dumps(defaults, sort_keys=True) if all_defaults
                     else " ".join(f"{k}={v}" for k, v in sorted(defaults.items()))})
    return rows


def main(args) -> int:
    from harness.commands.tasks import print_rows

    print_rows(method_rows(all_defaults=args.format == "csv"), args.format, "ebm-bench methods")
    return 0
