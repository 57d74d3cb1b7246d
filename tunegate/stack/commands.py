"""`tunegate stack up | down | status | env | connect`: the team stack's verbs."""

from __future__ import annotations

import os
from pathlib import Path

from components.config import ConfigError

DATABASE_VARIABLES = ("TUNEGATE_STACK_DATABASE_URI", "TUNEGATE_STACK_AUTH_DATABASE_URI")


def _home(args) -> Path:
    home = Path(args.dir)
    return (home if home.is_absolute() else Path(args.project).resolve() / home).resolve()


def _database_uris(auth: bool) -> tuple[str, str] | None:
    """The team's own PostgreSQL, from the environment only (the URIs hold a password)."""
    backend, auth_db = (os.environ.get(name) for name in DATABASE_VARIABLES)
    if not backend:
        return None
    if auth and not auth_db:
        raise ConfigError("with --auth and TUNEGATE_STACK_DATABASE_URI, also set TUNEGATE_STACK_AUTH_DATABASE_URI "
                         "(basic-auth keeps its users in a database of its own)")
    return backend, auth_db or backend


def cmd_up(args) -> int:
    from tunegate.stack import supervisor
    from tunegate.stack.settings import StackSettings

    home = _home(args)
    if supervisor.running_pid(home):
        print(f"a stack is already running from {home}; `tunegate stack down --dir {home}` stops it")
        return 1
    stack = StackSettings(home=home, host=args.host, s3_port=args.s3_port, mlflow_port=args.mlflow_port,
                          prefect_port=args.prefect_port, auth=args.auth)
    if args.detach:
        argv = ["--project", args.project, "stack", "up", "--dir", str(home), "--host", args.host,
                "--s3-port", str(args.s3_port), "--mlflow-port", str(args.mlflow_port),
                "--prefect-port", str(args.prefect_port)] + (["--auth"] if args.auth else [])
        pid = supervisor.detach(argv, home)
        print(f"stack running in the background (pid {pid}; log {home / 'stack.log'})")
        _print_env(stack)
        return 0
    supervisor.run(stack, _database_uris(args.auth))
    return 0


def _print_env(stack) -> None:
    print("clients need only these URLs:")
    for key, value in stack.client_env().items():
        print(f"  export {key}={value}")
    if stack.auth:
        print("  export MLFLOW_TRACKING_USERNAME=... MLFLOW_TRACKING_PASSWORD=...   # your MLflow user")


def cmd_down(args) -> int:
    from tunegate.stack import supervisor

    home = _home(args)
    print("stack stopped" if supervisor.stop(home) else f"no stack running from {home}")
    return 0


def cmd_status(args) -> int:
    from tunegate.stack import supervisor
    from tunegate.stack.services import answers
    from tunegate.stack.settings import StackSettings

    home = _home(args)
    stack = StackSettings.load(home)
    pid = supervisor.running_pid(home)
    print(f"stack {home}: " + (f"running (supervisor pid {pid})" if pid else "not running"))
    for name, url in [("s3", f"{stack.s3_endpoint}/moto-api/"), ("mlflow", f"{stack.mlflow_uri}/health"),
                      ("prefect", f"{stack.prefect_api_url}/health")]:
        print(f"  {name:<8} {url.rsplit('/', 1)[0]:<40} {'up' if answers(url) else 'down'}")
    return 0 if pid else 1


def cmd_env(args) -> int:
    from tunegate.stack.settings import StackSettings

    for key, value in StackSettings.load(_home(args)).client_env().items():
        print(f"export {key}={value}")
    return 0


def cmd_connect(args) -> int:
    from tunegate.stack.connect import connect
    from tunegate.stack.settings import StackSettings

    home = _home(args)
    stack = StackSettings.load(home)
    for line in connect(Path(args.project).resolve(), stack, home, deploy=not args.no_deploy):
        print(line)
    print("then, in each shell that runs tunegate against the stack:")
    for key, value in stack.client_env().items():
        print(f"  export {key}={value}")
    return 0


def add_stack_parser(verbs) -> None:
    stack = verbs.add_parser("stack", help="a team stack on real servers: MLflow on PostgreSQL and S3, a DVC remote "
                                           "on S3, a Prefect server with a work pool and worker")
    actions = stack.add_subparsers(dest="stack_command", required=True)

    def verb(name: str, handler, help_text: str):
        parser = actions.add_parser(name, help=help_text)
        parser.add_argument("--dir", default=".stack", help="the stack's folder (state, logs, local databases)")
        parser.set_defaults(handler=handler)
        return parser

    up = verb("up", cmd_up, "start the stack (foreground; Ctrl-C stops it) or --detach")
    up.add_argument("--detach", action="store_true", help="run in the background; `tunegate stack down` stops it")
    up.add_argument("--auth", action="store_true", help="MLflow's basic-auth app: every client logs in")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--s3-port", type=int, default=9000)
    up.add_argument("--mlflow-port", type=int, default=5000)
    up.add_argument("--prefect-port", type=int, default=4200)
    verb("down", cmd_down, "stop a detached stack")
    verb("status", cmd_status, "is each part answering")
    verb("env", cmd_env, "the client settings (URLs only) as shell exports")
    connect = verb("connect", cmd_connect, "point this project at the stack: DVC remote, MLflow tracking URI, "
                                           "the retraining deployment on the work pool")
    connect.add_argument("--no-deploy", action="store_true", help="configure DVC and MLflow only")
