"""The `pxpool` command: start, list, inspect and stop pools from a shell.

Errors go to stderr as one ``pxpool: error: ...`` paragraph and exit with status 1
(2 for wrong usage, as argparse does). `pxpool doctor` exits 1 when engines differ from
this shell and 2 on errors.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ._core import runtime
from ._reliability.idle import mark_released
from ._reliability.idle import read_state as read_idle_state
from .doctor import DEFAULT_ENV, format_differences
from .engines import controller_alive, provider_for
from .engines.kubernetes import k8s_role_yaml
from .errors import InvalidArgumentError, PxpoolError
from .health import format_health, format_table
from .pool import Pool
from .profile import list_profiles, load_profile


def _overrides(pairs: Sequence[str]) -> dict[str, str]:
    found = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidArgumentError(
                f"cannot read setting {pair!r}; write KEY=VALUE, e.g. walltime=00:30:00"
            )
        found[key.strip()] = value
    return found


def cmd_start(args: argparse.Namespace) -> int:
    overrides: dict[str, object] = dict(_overrides(args.set))
    if args.n is not None:
        overrides["engines"] = args.n
    profile = load_profile(args.profile, **overrides)
    pool = Pool(profile, args.name or args.profile, detached=True)
    pool.start_sync(timeout=args.timeout)
    ids = pool.ids
    pool.disconnect()
    print(f"started pool {pool.name!r} ({profile.provider}) with {len(ids)} engines: {ids}")
    print(f"  connection files: {runtime.pool_dir(pool.name) / 'security'}")
    print(f"  attach from Python: pxpool.Pool.attach({pool.name!r}); stop: pxpool stop {pool.name}")
    return 0


def cmd_script(args: argparse.Namespace) -> int:
    overrides: dict[str, object] = dict(_overrides(args.set))
    if args.n is not None:
        overrides["engines"] = args.n
    provider = provider_for(load_profile(args.profile, **overrides))
    if provider.profile.controller.location == "job":  # submitted first, then the engines'
        print(f"# controller job\n{provider.controller_job_script()}\n# engine job")
    print(provider.job_script(), end="")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    rows = []
    for name in runtime.record_names():
        record = runtime.read_record(name) or {}
        rows.append(
            {
                "name": name,
                "profile": record.get("profile", "?"),
                "provider": record.get("provider", "?"),
                "state": "running" if controller_alive(name) else "stale",
                "engines": sum(len(v) for v in record.get("engine_sets", {}).values()),
            }
        )
    print(format_table(rows) if rows else "no pools")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    names = [args.name] if args.name else runtime.record_names()
    if not names:
        print("no pools")
    for name in names:
        pool = Pool.attach(name)
        try:
            print(
                f"pool {name!r} (profile {pool.profile.name!r}, {pool.profile.provider}): {pool.engines} engines"
                + _idle_note(name)
            )
            print(format_health(mark_released(name, pool.health_snapshots())))
        finally:
            pool.disconnect()
    return 0


def _idle_note(name: str) -> str:
    """Core-hours so far and an idle release, as the pool's owner recorded them."""
    state = read_idle_state(name)
    if state is None:
        return ""
    note = f", {state['core_hours']:.3f} core-hours"
    if state.get("released_ids"):
        note += f"; engines {state['released_ids']} released (idle), started again on next use"
    return note


def cmd_doctor(args: argparse.Namespace) -> int:
    """Exit 0 when the engines match this process, 1 when they differ, 2 on error."""
    try:
        pool = Pool.attach(args.name)
        try:
            rows = pool.doctor(args.package, args.env or DEFAULT_ENV, show=False).to_dict("records")
        finally:
            pool.disconnect()
    except PxpoolError as exc:
        print(f"pxpool: error: {exc}", file=sys.stderr)
        return 2
    print(f"pool {args.name!r}: engines compared with this shell's Python and environment")
    print(format_differences(rows))
    return 1 if rows else 0


def cmd_stop(args: argparse.Namespace) -> int:
    if not args.all and not args.name:
        raise InvalidArgumentError(
            "say which pool to stop: `pxpool stop NAME`, or `pxpool stop --all`"
        )
    names = runtime.record_names() if args.all else [args.name]
    for name in names:
        Pool.stop_by_name(name)
        print(f"stopped pool {name!r}")
    if args.all and not names:
        print("no pools")
    return 0


def cmd_profiles(args: argparse.Namespace) -> int:
    rows = [
        {"name": p.name, "origin": p.origin, "description": p.description, "path": p.path}
        for p in list_profiles()
    ]
    print(format_table(rows))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    return run_demo(engines=args.n)


def cmd_k8s_rbac(args: argparse.Namespace) -> int:
    print(k8s_role_yaml(args.namespace, args.service_account), end="")
    return 0


def _add_start_arguments(start: argparse.ArgumentParser) -> None:
    start.add_argument("profile", help="profile name (see `pxpool profiles`)")
    start.add_argument("-n", type=int, help="number of engines (overrides the profile)")
    start.add_argument("--name", help="pool name (default: the profile name)")
    start.add_argument("--timeout", type=float, help="seconds to wait for all engines")
    start.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a profile setting"
    )


def _add_doctor_arguments(doctor: argparse.ArgumentParser) -> None:
    doctor.add_argument("name", help="pool name")
    doctor.add_argument(
        "--package", action="append", default=[], metavar="NAME", help="also compare this package"
    )
    doctor.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="VAR",
        help=f"compare these variables instead of {', '.join(DEFAULT_ENV)}",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pxpool", description="Pools of parallel IPython engines."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    start = commands.add_parser("start", help="start a pool that outlives this command")
    _add_start_arguments(start)
    start.set_defaults(run=cmd_start)

    script = commands.add_parser("script", help="print the job script a batch profile would submit")
    script.add_argument("profile", help="profile name (see `pxpool profiles`)")
    script.add_argument("-n", type=int, help="number of engines (overrides the profile)")
    script.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a profile setting"
    )
    script.set_defaults(run=cmd_script)

    commands.add_parser("list", help="list pools and whether they run").set_defaults(run=cmd_list)

    status = commands.add_parser(
        "status", help="engine health of a pool: state, task, counts, CPU, memory"
    )
    status.add_argument("name", nargs="?", help="pool name (default: every pool)")
    status.set_defaults(run=cmd_status)

    doctor = commands.add_parser(
        "doctor", help="differences between a pool's engines and this shell's Python and env"
    )
    _add_doctor_arguments(doctor)
    doctor.set_defaults(run=cmd_doctor)

    stop = commands.add_parser("stop", help="stop a pool and all its engines")
    stop.add_argument("name", nargs="?", help="pool name")
    stop.add_argument("--all", action="store_true", help="stop every pool")
    stop.set_defaults(run=cmd_stop)

    commands.add_parser("profiles", help="list profiles and where each comes from").set_defaults(
        run=cmd_profiles
    )

    rbac = commands.add_parser(
        "k8s-rbac", help="print the Kubernetes Role the kubernetes provider needs, as YAML"
    )
    rbac.add_argument("--namespace", help="where engines run (default: this pod's namespace)")
    rbac.add_argument("--service-account", default="", help="the notebook's (default: default)")
    rbac.set_defaults(run=cmd_k8s_rbac)

    demo = commands.add_parser(
        "demo", help="start a local pool, run real work, print results, stop"
    )
    demo.add_argument("-n", type=int, help="number of engines (default: CPU cores)")
    demo.set_defaults(run=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except PxpoolError as exc:
        print(f"pxpool: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pxpool: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
