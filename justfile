# Recipes for the credentials service. `just` alone lists them.
set quiet

venv := ".venv"
python := venv / "bin/python"

# list the recipes
default:
    just --list

# create the virtualenv and install the service with its dev and test dependencies
install:
    test -x {{python}} || python3 -m venv {{venv}}
    {{python}} -m pip install -q --upgrade pip
    {{python}} -m pip install -q -e '.[dev]'

# (exec: credctl replaces the recipe's shell, so Ctrl-C reaches it alone and it ends quietly, with status 0)
# the whole stack on this machine: OpenBao, Postgres, bootstrap, migrations, the service on 127.0.0.1:8000
dev *args: install
    exec {{venv}}/bin/credctl dev {{args}}

# the test suite against real OpenBao and Postgres (pytest arguments pass through)
test *args: install
    {{venv}}/bin/pytest {{args}}

# ruff lint and format check
lint:
    {{venv}}/bin/ruff check .
    {{venv}}/bin/ruff format --check .

# format the code
fmt:
    {{venv}}/bin/ruff format .
    {{venv}}/bin/ruff check --fix .

# mypy, strict, on service, vault and db
typecheck:
    {{venv}}/bin/mypy

# apply migrations to DATABASE_URL
migrate:
    {{venv}}/bin/credctl migrate

# generate a migration from table changes (review it before committing)
makemigration:
    PICCOLO_CONF=db.piccolo_conf {{venv}}/bin/piccolo migrations new db --auto

# everything CI checks
check: lint typecheck test

# benchmark the service against its HTTP and backend floors (issue 5); `just bench --quick`, `just bench --n 1000000`
bench *args: install
    command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk) || sudo apt-get install -y wrk
    {{python}} -m pip install -q matplotlib psutil rich py-spy
    {{python}} -m bench {{args}}

# the credential proxy against calling its upstream directly, and against reveal (issue 14)
bench-proxy *args: install
    command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk) || sudo apt-get install -y wrk
    {{python}} -m pip install -q psutil rich
    {{python}} -m bench.proxy {{args}}

# the HA failure drills alone: three OpenBao raft nodes, a replicated Postgres, two instances (about 4 minutes)
drills *args: install
    {{venv}}/bin/pytest -m drill -s tests/drills {{args}}

# pin the image's dependencies, with hashes, from pyproject.toml (service/Dockerfile installs exactly these)
lock: install
    {{python}} -m pip install -q pip-tools
    {{venv}}/bin/pip-compile -q --generate-hashes --strip-extras --no-emit-index-url --no-emit-find-links --output-file=requirements.lock pyproject.toml

# the secret files compose.yaml reads (a random Postgres password and the DATABASE_URL holding it); kept if present
compose-secrets:
    sh devtools/compose-secrets.sh

# a private CA and OpenBao's TLS certificate for compose.yaml's prod profile, in secrets/tls; kept if present (--force)
compose-certs *args:
    sh devtools/make-certs.sh {{args}}
