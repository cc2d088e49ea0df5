#!/usr/bin/env python3
"""Offline checks of the deployment files (no Azure, no Bicep CLI, no Docker needed).

Why this exists: `azd up` is the first place a broken Bicep file, a bad azure.yaml, a missing app
setting or a leaked key would otherwise show up, and our build machines cannot reach Azure.
These checks catch those classes of mistakes in well under a minute:

  bicep-parse        every infra/**/*.bicep parses with the tree-sitter Bicep grammar with no
                     ERROR or MISSING node (syntax only: types and API versions need `bicep build`)
  modules            module paths exist, passed params are declared by the module, required
                     params are passed, `<module>.outputs.<name>` names a real output
  azure-yaml         azure.yaml validates against shared/schemas/azure.yaml.schema.json (remote
                     $refs of AI-extension sub-schemas are resolved to `{}` offline) and has the
                     shape the project needs (service `handler`, function host, custom language,
                     dist folder, prepackage hooks whose scripts exist)
  main-bicep         subscription scope, rg-<env>, resource token, azd tags, Flex FC1 + custom
                     runtime, no FUNCTIONS_WORKER_RUNTIME / FUNCTIONS_EXTENSION_VERSION, the
                     required outputs
  parameters         main.parameters.json names only declared parameters and covers every
                     parameter without a default
  role-guids         every GUID in the Bicep files is a documented built-in role id (list below,
                     cross-checked with shared/reference/functions-host-contract.md when present)
  no-secrets         no parameter default, parameter-file value or output looks like a secret
                     (key, password, token, SAS, connection string, listKeys())
  app-settings       every setting the handler reads (src/config.rs `SETTINGS` table and the
                     docs/settings.md table) is set in the Bicep, except the local-only allowlist;
                     docs and code list the same settings; no unknown CDC_* setting in the Bicep
  function-json      IncrementalCopy reads its schedule from %INCREMENTAL_COPY_SCHEDULE%
  compose            compose.yaml: SQL Server 2022 with the Agent, a sqlcmd healthcheck, Azurite
  self-test          each checker is run on a small bad input and must report it (so a checker
                     that silently passes everything fails here)

Usage: python tests/infra/check_infra.py [--repo PATH]. Prints one line per check and a closing
line `infra: N passed, M failed`; exit status 1 when anything failed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import tree_sitter
import tree_sitter_bicep
import yaml

# Built-in Azure role definition ids this project may assign, from
# https://learn.microsoft.com/azure/role-based-access-control/built-in-roles (as listed in
# shared/reference/functions-host-contract.md, "Deployment facts").
DOCUMENTED_ROLES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
}
# Roles the deployment cannot work without (host storage, data container, queues, telemetry).
REQUIRED_ROLES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    # The fan-out queues (CopyTable's trigger and outputs).
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "3913510d-42f4-4e42-8a64-420c390055eb",
}

# Settings the handler may read that are deliberately NOT app settings in Azure:
LOCAL_ONLY_SETTINGS = {
    # Secrets: in Azure the app authenticates with its managed identity instead.
    "CDC_SQL_CONNECTION_STRING",
    "CDC_STORAGE_CONNECTION_STRING",
    # Allows an unencrypted TDS connection to a local container; never wanted in Azure.
    "CDC_ALLOW_PLAINTEXT_SQL",
    # Human-readable logs for a terminal; in Azure the default (what the host collects) is right.
    "CDC_LOG_FORMAT",
}
# Set by the Functions host itself, or by the developer's shell: never in the Bicep.
HOST_PROVIDED_SETTINGS = {
    "FUNCTIONS_CUSTOMHANDLER_PORT",
    "FUNCTIONS_CUSTOMHANDLER_WORKER_ID",
    "FUNCTIONS_APP_ROOT_PATH",
    "RUST_LOG",
}
# App settings the Bicep sets that are not CDC_* settings of the handler.
INFRA_SETTINGS = {
    "AzureWebJobsStorage__accountName",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "AzureWebJobsStorage__queueServiceUri",
    "AZURE_CLIENT_ID",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    "INCREMENTAL_COPY_SCHEDULE",
}
FORBIDDEN_ON_FLEX = {"FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION"}

REQUIRED_OUTPUTS = [
    "AZURE_LOCATION",
    "AZURE_TENANT_ID",
    "AZURE_RESOURCE_GROUP",
    "AZURE_FUNCTION_APP_NAME",
    "AZURE_STORAGE_ACCOUNT_NAME",
    "AZURE_STORAGE_BLOB_ENDPOINT",
    "AZURE_USER_ASSIGNED_IDENTITY_CLIENT_ID",
    "AZURE_USER_ASSIGNED_IDENTITY_NAME",
    "SQL_SERVER_FQDN",
    "SQL_DATABASE_NAME",
]

GUID_RE = re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b")
SECRET_NAME_RE = re.compile(
    r"(password|passwd|pwd|secret|token|accountkey|access_?key|sas|connection_?string|conn_?str|"
    r"credential|privatekey|apikey|(^|_)key$|key$)",
    re.IGNORECASE,
)
SECRET_VALUE_RES = [
    re.compile(r"AccountKey\s*=", re.IGNORECASE),
    re.compile(r"SharedAccessKey\s*=", re.IGNORECASE),
    re.compile(r"SharedAccessSignature\s*=", re.IGNORECASE),
    re.compile(r"(^|[;\s])(Password|Pwd)\s*=", re.IGNORECASE),
    re.compile(r"[?&]sig=", re.IGNORECASE),
    re.compile(r"InstrumentationKey\s*=", re.IGNORECASE),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    # Long base64 runs (account keys are 88 characters).
    re.compile(r"[A-Za-z0-9+/]{40,}={0,2}"),
]
# Expressions that read a secret out of a resource.
SECRET_EXPR_RE = re.compile(
    r"(listKeys\s*\(|listConnectionStrings\s*\(|listCredentials\s*\(|listSecrets\s*\(|"
    r"\.ConnectionString\b|connectionString|primaryKey|secondaryKey|InstrumentationKey)",
    re.IGNORECASE,
)


# --------------------------------------------------------------------------------------------
# Bicep helpers (tree-sitter)

_PARSER = tree_sitter.Parser(tree_sitter.Language(tree_sitter_bicep.language()))


def parse_bicep(source: bytes) -> tree_sitter.Tree:
    return _PARSER.parse(source)


def walk(node):
    yield node
    for child in node.children:
        yield from walk(child)


def syntax_problems(source: bytes) -> list[str]:
    """ERROR and MISSING nodes, as `line:col kind text` (1-based)."""
    problems = []
    for node in walk(parse_bicep(source).root_node):
        if node.is_error or node.is_missing:
            line, col = node.start_point
            kind = "MISSING" if node.is_missing else "ERROR"
            snippet = node.text.decode("utf-8", "replace").splitlines()[0][:60] if node.text else ""
            problems.append(f"{line + 1}:{col + 1} {kind} {node.type} {snippet!r}")
    return problems


def strip_quotes(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1]
    return text


def object_keys(source: bytes) -> set[str]:
    """Every key of every object literal (identifier or quoted string)."""
    keys = set()
    for node in walk(parse_bicep(source).root_node):
        if node.type == "object_property" and node.children:
            key = node.children[0]
            if key.type in ("identifier", "string"):
                keys.add(strip_quotes(key.text.decode()))
    return keys


def string_values(source: bytes) -> set[str]:
    """The text of every string literal (comments excluded)."""
    return {
        node.text.decode()
        for node in walk(parse_bicep(source).root_node)
        if node.type == "string_content"
    }


@dataclass
class Declaration:
    kind: str  # 'param' | 'output'
    name: str
    text: str  # the whole declaration
    default: str | None  # params: the default expression text
    secure: bool
    line: int


def declarations(source: bytes) -> list[Declaration]:
    """`param` and `output` declarations with their decorators."""
    out = []
    root = parse_bicep(source).root_node
    pending_decorators: list[str] = []
    for node in root.children:
        if node.type == "decorators":
            pending_decorators = [node.text.decode()]
            continue
        if node.type in ("parameter_declaration", "output_declaration"):
            # Decorators may be children of the declaration or siblings before it.
            decos = pending_decorators + [c.text.decode() for c in node.children if c.type == "decorators"]
            name_node = next((c for c in node.children if c.type == "identifier"), None)
            name = name_node.text.decode() if name_node else "?"
            text = node.text.decode()
            default = None
            if node.type == "parameter_declaration":
                children = list(node.children)
                for i, child in enumerate(children):
                    if child.type == "=" and i + 1 < len(children):
                        default = children[i + 1].text.decode()
            out.append(
                Declaration(
                    kind="param" if node.type == "parameter_declaration" else "output",
                    name=name,
                    text=text,
                    default=default,
                    secure=any("@secure" in d for d in decos) or "@secure" in text,
                    line=node.start_point[0] + 1,
                )
            )
        pending_decorators = []
    return out


# --------------------------------------------------------------------------------------------
# Check framework


@dataclass
class Results:
    passed: int = 0
    failed: int = 0
    lines: list[str] = field(default_factory=list)

    def record(self, name: str, problems: list[str], note: str = "") -> None:
        if problems:
            self.failed += 1
            print(f"FAIL {name}")
            for p in problems:
                print(f"     - {p}")
        else:
            self.passed += 1
            print(f"ok   {name}{(' (' + note + ')') if note else ''}")


def bicep_files(repo: Path) -> list[Path]:
    return sorted((repo / "infra").rglob("*.bicep"))


def find_shared(repo: Path) -> Path | None:
    """shared/ sits beside the repository (CI, the main checkout) or above a worktree."""
    for base in [repo, *repo.parents]:
        candidate = base / "shared"
        if (candidate / "schemas").is_dir():
            return candidate
        candidate = base.parent / "shared"
        if (candidate / "schemas").is_dir():
            return candidate
    return None


# --------------------------------------------------------------------------------------------
# Checks: each returns a list of problems (empty = pass)


def check_bicep_parse(files: list[Path]) -> list[str]:
    problems = []
    if not files:
        return ["no .bicep files under infra/"]
    for f in files:
        for p in syntax_problems(f.read_bytes()):
            problems.append(f"{f.name}:{p}")
    return problems


def offline_schema_validator(schema: dict):
    """A validator whose remote $refs resolve to an empty (accept-all) schema, offline."""
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT201909

    def retrieve(uri: str):
        return Resource.from_contents({}, default_specification=DRAFT201909)

    registry = Registry(retrieve=retrieve)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, registry=registry)


def _module_body(node):
    for child in node.children:
        if child.type == "object":
            return child
        if child.type == "if_statement":
            return next((c for c in child.children if c.type == "object"), None)
        if child.type == "for_statement":
            inner = [c for c in walk(child) if c.type == "object"]
            return inner[0] if inner else None
    return None


def _property(obj, name: str):
    for prop in obj.children if obj is not None else []:
        if prop.type == "object_property" and prop.children and strip_quotes(prop.children[0].text.decode()) == name:
            return prop.children[-1]
    return None


def check_modules(files: list[Path]) -> list[str]:
    """What `bicep build` would reject between files: a module path that does not exist, a
    parameter the module does not declare, a required parameter not passed, an output that the
    module does not have."""
    problems = []
    for f in files:
        root = parse_bicep(f.read_bytes()).root_node
        modules = {}
        for node in root.children:
            if node.type != "module_declaration":
                continue
            symbol = next(c for c in node.children if c.type == "identifier").text.decode()
            path_node = next((c for c in node.children if c.type == "string"), None)
            rel = strip_quotes(path_node.text.decode()) if path_node else ""
            if rel.startswith("br:") or rel.startswith("br/") or rel.startswith("ts:"):
                continue
            target = (f.parent / rel).resolve()
            if not target.exists():
                problems.append(f"{f.name}: module {symbol}: {rel} does not exist")
                continue
            decls = declarations(target.read_bytes())
            params = {d.name: d for d in decls if d.kind == "param"}
            outputs = {d.name for d in decls if d.kind == "output"}
            modules[symbol] = (rel, outputs)
            passed_obj = _property(_module_body(node), "params")
            passed = set()
            if passed_obj is not None and passed_obj.type == "object":
                passed = {
                    strip_quotes(p.children[0].text.decode())
                    for p in passed_obj.children
                    if p.type == "object_property"
                }
            for name in sorted(passed - params.keys()):
                problems.append(f"{f.name}: module {symbol} passes {name}, which {rel} does not declare")
            for name, d in sorted(params.items()):
                if d.default is None and name not in passed:
                    problems.append(f"{f.name}: module {symbol} does not pass required parameter {name}")
        for node in walk(root):
            if node.type != "member_expression" or len(node.children) != 3:
                continue
            inner, _, prop = node.children
            if inner.type != "member_expression" or len(inner.children) != 3:
                continue
            base, _, outputs_kw = inner.children
            if base.type == "identifier" and outputs_kw.text == b"outputs" and base.text.decode() in modules:
                rel, outputs = modules[base.text.decode()]
                if prop.text.decode() not in outputs:
                    problems.append(f"{f.name}: {base.text.decode()}.outputs.{prop.text.decode()}: {rel} has no such output")
    return problems


def check_azure_yaml(repo: Path, schema_path: Path | None) -> list[str]:
    problems = []
    path = repo / "azure.yaml"
    if not path.exists():
        return ["azure.yaml missing"]
    doc = yaml.safe_load(path.read_text())
    if schema_path is None:
        problems.append("shared/schemas/azure.yaml.schema.json not found beside the repository")
    else:
        validator = offline_schema_validator(json.loads(schema_path.read_text()))
        for err in sorted(validator.iter_errors(doc), key=lambda e: list(e.path)):
            where = "/".join(str(p) for p in err.path) or "(root)"
            problems.append(f"schema: {where}: {err.message}")
    if doc.get("name") != "cdc-copy":
        problems.append(f"name is {doc.get('name')!r}, expected 'cdc-copy'")
    services = doc.get("services") or {}
    if list(services) != ["handler"]:
        problems.append(f"services are {list(services)}, expected exactly ['handler']")
    svc = services.get("handler") or {}
    for key, want in [("host", "function"), ("language", "custom"), ("project", "."), ("dist", "dist")]:
        if svc.get(key) != want:
            problems.append(f"services.handler.{key} is {svc.get(key)!r}, expected {want!r}")
    hook = (svc.get("hooks") or {}).get("prepackage") or {}
    for os_name, script in [("posix", "scripts/build-dist.sh"), ("windows", "scripts/build-dist.ps1")]:
        run = (hook.get(os_name) or {}).get("run", "")
        if script not in run:
            problems.append(f"prepackage.{os_name}.run is {run!r}, expected it to run {script}")
        if not (repo / script).exists():
            problems.append(f"{script} missing")
    return problems


def check_main_bicep(repo: Path) -> list[str]:
    problems = []
    main = repo / "infra" / "main.bicep"
    if not main.exists():
        return ["infra/main.bicep missing"]
    text = main.read_text()
    all_text = "\n".join(f.read_text() for f in bicep_files(repo))
    expectations = [
        (r"targetScope\s*=\s*'subscription'", "targetScope = 'subscription'"),
        (r"name:\s*'rg-\$\{environmentName\}'", "resource group named 'rg-${environmentName}'"),
        (
            r"toLower\(uniqueString\(subscription\(\)\.id,\s*environmentName,\s*location\)\)",
            "resourceToken = toLower(uniqueString(subscription().id, environmentName, location))",
        ),
        (r"'azd-env-name':\s*environmentName", "tag 'azd-env-name': environmentName"),
        (r"'azd-service-name':\s*'handler'", "tag 'azd-service-name': 'handler' (matches azure.yaml)"),
    ]
    for pattern, what in expectations:
        if not re.search(pattern, text):
            problems.append(f"main.bicep: expected {what}")
    flex = [
        (r"name:\s*'FC1'", "FC1 plan sku"),
        (r"tier:\s*'FlexConsumption'", "FlexConsumption tier"),
        (r"reserved:\s*true", "Linux plan (reserved: true)"),
        (r"runtime:\s*\{\s*name:\s*'custom'\s*version:\s*'1\.0'\s*\}", "runtime {name: 'custom', version: '1.0'}"),
        (r"type:\s*'blobContainer'", "deployment storage type blobContainer"),
        (r"type:\s*'UserAssignedIdentity'", "deployment storage authenticated with the user-assigned identity"),
        (r"allowSharedKeyAccess:\s*false", "storage allowSharedKeyAccess: false"),
        (r"allowBlobPublicAccess:\s*false", "storage allowBlobPublicAccess: false"),
        (r"minimumTlsVersion:\s*'TLS1_2'", "storage minimumTlsVersion TLS1_2"),
        (r"azureADOnlyAuthentication:\s*true", "SQL server with Entra-only authentication"),
        (r"param\s+sqlAutoPauseDelay\s+int\s*=\s*-1", "serverless auto-pause disabled by default (CDC capture)"),
    ]
    for pattern, what in flex:
        if not re.search(pattern, all_text):
            problems.append(f"infra: expected {what}")
    used_names = set()
    for f in bicep_files(repo):
        used_names |= object_keys(f.read_bytes()) | string_values(f.read_bytes())
    for forbidden in sorted(FORBIDDEN_ON_FLEX):
        if forbidden in used_names:
            problems.append(f"infra sets {forbidden}; Flex Consumption rejects it")
    outputs = {d.name for d in declarations(main.read_bytes()) if d.kind == "output"}
    for name in REQUIRED_OUTPUTS:
        if name not in outputs:
            problems.append(f"main.bicep: output {name} missing")
    for name in outputs:
        if not re.fullmatch(r"[A-Z][A-Z0-9_]*", name):
            problems.append(f"main.bicep: output {name} is not UPPER_SNAKE (azd env vars)")
    return problems


def check_parameters(repo: Path) -> list[str]:
    problems = []
    main = repo / "infra" / "main.bicep"
    pfile = repo / "infra" / "main.parameters.json"
    if not pfile.exists():
        return ["infra/main.parameters.json missing"]
    params = json.loads(pfile.read_text()).get("parameters", {})
    decls = {d.name: d for d in declarations(main.read_bytes()) if d.kind == "param"}
    for name in params:
        if name not in decls:
            problems.append(f"main.parameters.json sets {name}, which main.bicep does not declare")
    for name, d in decls.items():
        if d.default is None and name not in params:
            problems.append(f"main.bicep param {name} has no default and is not in main.parameters.json")
    for name, want in [("environmentName", "${AZURE_ENV_NAME}"), ("location", "${AZURE_LOCATION}"),
                       ("principalId", "${AZURE_PRINCIPAL_ID}")]:
        got = (params.get(name) or {}).get("value")
        if got != want:
            problems.append(f"main.parameters.json {name} is {got!r}, expected {want!r}")
    return problems


def reference_role_ids(shared: Path | None) -> set[str] | None:
    if shared is None:
        return None
    ref = shared / "reference" / "functions-host-contract.md"
    if not ref.exists():
        return None
    return {g.lower() for g in GUID_RE.findall(ref.read_text())}


def check_role_guids(files: list[Path], shared: Path | None) -> list[str]:
    problems = []
    documented = reference_role_ids(shared)
    if documented is not None:
        for guid, role in DOCUMENTED_ROLES.items():
            if guid not in documented:
                problems.append(f"{role} {guid} is in this script but not in the reference")
    used = set()
    for f in files:
        for guid in GUID_RE.findall(f.read_text()):
            guid = guid.lower()
            used.add(guid)
            if guid not in DOCUMENTED_ROLES:
                problems.append(f"{f.name}: {guid} is not a documented built-in role id")
    for guid in sorted(REQUIRED_ROLES - used):
        problems.append(f"role {DOCUMENTED_ROLES[guid]} ({guid}) is never assigned")
    return problems


def looks_secret_value(value: str) -> str | None:
    for rx in SECRET_VALUE_RES:
        if rx.search(value):
            return rx.pattern
    return None


def check_no_secrets(files: list[Path], param_file: Path | None) -> list[str]:
    problems = []
    for f in files:
        for d in declarations(f.read_bytes()):
            where = f"{f.name}:{d.line} {d.kind} {d.name}"
            if d.kind == "param" and d.default is not None:
                if SECRET_NAME_RE.search(d.name) and d.default.strip() not in ("''", "\"\""):
                    problems.append(f"{where}: a secret-named parameter has a non-empty default")
                hit = looks_secret_value(d.default)
                if hit:
                    problems.append(f"{where}: default looks like a secret ({hit})")
                if SECRET_EXPR_RE.search(d.default):
                    problems.append(f"{where}: default reads a secret from a resource")
            if d.kind == "param" and SECRET_NAME_RE.search(d.name) and not d.secure:
                problems.append(f"{where}: secret-named parameter is not @secure()")
            if d.kind == "output":
                if SECRET_NAME_RE.search(d.name):
                    problems.append(f"{where}: output name looks like a secret")
                if SECRET_EXPR_RE.search(d.text) or looks_secret_value(d.text):
                    problems.append(f"{where}: output value looks like a secret")
                if "@secure" in d.text:
                    problems.append(f"{where}: secure output (a secret leaves the deployment)")
    if param_file is not None and param_file.exists():
        params = json.loads(param_file.read_text()).get("parameters", {})
        for name, entry in params.items():
            value = json.dumps(entry.get("value", ""))
            hit = looks_secret_value(value)
            if hit or (SECRET_NAME_RE.search(name) and not re.fullmatch(r'"\$\{[A-Z0-9_]+\}"', value)):
                problems.append(f"main.parameters.json {name}: value looks like a secret")
    return problems


def settings_from_code(repo: Path) -> tuple[set[str] | None, str]:
    """Names in `const SETTINGS: &[...] = &[...]` of src/config.rs. Entries are
    `name: "LITERAL"` or `name: CONST_IDENT` with `const CONST_IDENT: &str = "VALUE";`."""
    path = repo / "src" / "config.rs"
    if not path.exists():
        return None, "src/config.rs missing"
    text = path.read_text()
    m = re.search(r"\bconst\s+SETTINGS\s*:[^=]*=\s*&?\[(.*?)\n\s*\];", text, re.S)
    if not m:
        return None, "src/config.rs has no `SETTINGS` table (`pub const SETTINGS: &[...] = &[...];`)"
    consts = dict(re.findall(r'\bconst\s+([A-Za-z_][A-Za-z0-9_]*)\s*:\s*&(?:\'static\s+)?str\s*=\s*"([^"]*)"\s*;', text))
    names = set()
    for literal, ident in re.findall(r'\bname:\s*(?:"([A-Za-z_][A-Za-z0-9_]*)"|([A-Za-z_][A-Za-z0-9_:]*))', m.group(1)):
        if literal:
            names.add(literal)
        else:
            ident = ident.split("::")[-1]
            if ident not in consts:
                return None, f"src/config.rs SETTINGS names {ident}, which is not a `const {ident}: &str` in that file"
            names.add(consts[ident])
    if not names:
        return None, "src/config.rs `SETTINGS` table has no `name: ...` entries"
    return names, ""


def settings_from_docs(repo: Path, page: str = "docs/settings.md") -> tuple[set[str] | None, str]:
    """First-column `NAME`s of the markdown table(s) whose header's first cell is "Setting"
    (other tables on the page, e.g. of functions or statuses, are ignored)."""
    path = repo / page
    if not path.exists():
        return None, f"{page} missing (the settings table other helpers write)"
    names = set()
    header: str | None = None
    for line in path.read_text().splitlines():
        if not line.lstrip().startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells[0].strip("`* ").lower()
            continue
        if header not in ("setting", "settings", "name", "app setting"):
            continue
        m = re.fullmatch(r"`([A-Za-z_][A-Za-z0-9_]*)`.*", cells[0])
        if m:
            names.add(m.group(1))
    if not names:
        return None, f"{page} has no table headed `| Setting |` whose rows start with a `SETTING_NAME`"
    return names, ""


def bicep_setting_names(files: list[Path]) -> set[str]:
    names = set()
    for f in files:
        for key in object_keys(f.read_bytes()):
            if re.fullmatch(r"(CDC_[A-Z0-9_]+|[A-Z][A-Z0-9]*(_[A-Z0-9]+)+|AzureWebJobs[A-Za-z_]+)", key):
                names.add(key)
    return names


def check_app_settings(repo: Path, files: list[Path]) -> list[str]:
    problems = []
    in_bicep = bicep_setting_names(files)
    code, code_why = settings_from_code(repo)
    docs, docs_why = settings_from_docs(repo)
    readme, readme_why = settings_from_docs(repo, "README.md")
    if code is None:
        problems.append(code_why)
    if docs is None:
        problems.append(docs_why)
    if readme is None:
        problems.append(readme_why)
    elif docs is not None and readme != docs:
        problems.append(
            f"README.md's settings table differs from docs/settings.md: {sorted(readme ^ docs)}"
        )
    exempt = LOCAL_ONLY_SETTINGS | HOST_PROVIDED_SETTINGS
    for source, names in [("src/config.rs", code), ("docs/settings.md", docs)]:
        if names is None:
            continue
        for name in sorted(names - in_bicep - exempt):
            problems.append(f"{name} ({source}) is not set in the Bicep app settings")
    if code is not None and docs is not None:
        for name in sorted(code - docs):
            problems.append(f"{name} is read by src/config.rs but missing from docs/settings.md")
        for name in sorted(docs - code):
            problems.append(f"{name} is documented in docs/settings.md but not in src/config.rs SETTINGS")
    if code is not None:
        for name in sorted(n for n in in_bicep if n.startswith("CDC_") and n not in code):
            problems.append(f"{name} is set in the Bicep but the handler does not read it (typo?)")
    for name in sorted(INFRA_SETTINGS - in_bicep):
        problems.append(f"{name} is not set in the Bicep")
    for name in sorted(LOCAL_ONLY_SETTINGS & in_bicep):
        problems.append(f"{name} is local-only but set in the Bicep")
    return problems


def check_function_json(repo: Path) -> tuple[list[str], str]:
    path = repo / "IncrementalCopy" / "function.json"
    if not path.exists():
        return [], "IncrementalCopy/function.json not in this tree yet; not checked"
    doc = json.loads(path.read_text())
    timers = [b for b in doc.get("bindings", []) if b.get("type") == "timerTrigger"]
    if not timers:
        return ["IncrementalCopy/function.json has no timerTrigger binding"], ""
    if timers[0].get("schedule") != "%INCREMENTAL_COPY_SCHEDULE%":
        return [f"IncrementalCopy schedule is {timers[0].get('schedule')!r}, expected '%INCREMENTAL_COPY_SCHEDULE%'"], ""
    return [], ""


def check_compose(repo: Path) -> list[str]:
    path = repo / "compose.yaml"
    if not path.exists():
        return ["compose.yaml missing"]
    doc = yaml.safe_load(path.read_text())
    services = doc.get("services") or {}
    problems = []
    images = {name: (svc or {}).get("image", "") for name, svc in services.items()}
    # The server: the SQL Server image run as itself (a one-shot sqlcmd service reusing the
    # image for its tools overrides the entrypoint).
    sql = [
        n for n, img in images.items()
        if img.startswith("mcr.microsoft.com/mssql/server:2022") and "entrypoint" not in services[n]
    ]
    azurite = [n for n, img in images.items() if img.startswith("mcr.microsoft.com/azure-storage/azurite")]
    if not sql:
        problems.append("no mcr.microsoft.com/mssql/server:2022-* service")
    if not azurite:
        problems.append("no mcr.microsoft.com/azure-storage/azurite service")
    for name in sql:
        svc = services[name]
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) for item in env)
        if str(env.get("MSSQL_AGENT_ENABLED", "")).lower() != "true":
            problems.append(f"{name}: MSSQL_AGENT_ENABLED must be true (CDC capture runs as an Agent job)")
        if str(env.get("ACCEPT_EULA", "")).upper() != "Y":
            problems.append(f"{name}: ACCEPT_EULA=Y missing")
        pw = str(env.get("MSSQL_SA_PASSWORD", ""))
        if not pw.startswith("${"):
            problems.append(f"{name}: MSSQL_SA_PASSWORD must come from an environment variable")
        test = json.dumps((svc.get("healthcheck") or {}).get("test", ""))
        if "/opt/mssql-tools18/bin/sqlcmd" not in test or "-C" not in test:
            problems.append(f"{name}: healthcheck must run /opt/mssql-tools18/bin/sqlcmd -C")
    for name in azurite:
        ports = json.dumps(services[name].get("ports", []))
        for port in ("10000", "10001", "10002"):
            if port not in ports:
                problems.append(f"{name}: port {port} not published")
    return problems


def check_gitignore(repo: Path) -> list[str]:
    path = repo / ".gitignore"
    lines = path.read_text().splitlines() if path.exists() else []
    return [] if any(line.strip().strip("/") == ".venv-infra" for line in lines) else [".venv-infra not in .gitignore"]


# --------------------------------------------------------------------------------------------
# Self-test: every checker must catch a planted fault.


def self_test(shared: Path | None) -> list[str]:
    # 'shared' gives the azure.yaml schema and the reference's role list when present.
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "infra").mkdir()
        bad = root / "infra" / "bad.bicep"

        bad.write_text("param x string = 'a'\nresource r 'A/b@2020-01-01' = {\n  name: 'n'\n")
        if not check_bicep_parse([bad]):
            problems.append("bicep-parse accepted an unterminated resource body")

        mod = root / "infra" / "mod.bicep"
        mod.write_text("param needed string\noutput name string = needed\n")
        bad.write_text("module m './mod.bicep' = {\n  name: 'm'\n  params: {\n    typo: 'x'\n  }\n}\n"
                       "output O string = m.outputs.nmae\n")
        found = check_modules([bad, mod])
        for want in ("passes typo", "required parameter needed", "outputs.nmae"):
            if not any(want in p for p in found):
                problems.append(f"modules did not report: {want}")
        mod.unlink()

        bad.write_text("var r = 'deadbeef-0000-0000-0000-000000000000'\n")
        if not any("not a documented" in p for p in check_role_guids([bad], shared)):
            problems.append("role-guids accepted an unknown GUID")

        bad.write_text("output STORAGE_KEY string = storage.listKeys().keys[0].value\n")
        if not check_no_secrets([bad], None):
            problems.append("no-secrets accepted an output of listKeys()")
        bad.write_text("param adminPassword string = 'Passw0rd!'\n")
        if not check_no_secrets([bad], None):
            problems.append("no-secrets accepted a password parameter with a default")
        bad.write_text("param conn string = 'DefaultEndpointsProtocol=https;AccountName=a;AccountKey=abc'\n")
        if not check_no_secrets([bad], None):
            problems.append("no-secrets accepted a connection string default")

        if shared is not None:
            (root / "azure.yaml").write_text(
                "name: cdc-copy\nservices:\n  handler:\n    host: function\n    hooks:\n"
                "      prepackage:\n        shell: bash\n        run: x\n"
            )
            schema = shared / "schemas" / "azure.yaml.schema.json"
            if not any(p.startswith("schema:") for p in check_azure_yaml(root, schema)):
                problems.append("azure-yaml accepted a hook with shell 'bash' (schema allows sh|pwsh)")

        (root / "src").mkdir()
        (root / "docs").mkdir()
        (root / "src" / "config.rs").write_text(
            '//! [`SETTINGS`] lists them = all\npub const CDC_NEW_THING: &str = "CDC_NEW_THING";\n'
            'pub const SETTINGS: &[Setting] = &[\n    Setting { name: "CDC_TABLES" },\n'
            '    Setting { name: CDC_NEW_THING },\n    Setting { name: "CDC_LOG_FORMAT" },\n];\n'
        )
        (root / "docs" / "settings.md").write_text(
            "| setting | meaning |\n|---|---|\n| `CDC_TABLES` | tables |\n| `CDC_NEW_THING` | new |\n"
            "| `CDC_LOG_FORMAT` | local |\n\n| Function | status |\n|---|---|\n| `FullLoad` | 200 |\n"
        )
        bad.write_text("var s = {\n  CDC_TABLES: 'dbo.customers'\n}\n")
        found = check_app_settings(root, [bad])
        if not any("CDC_NEW_THING" in p and "not set in the Bicep" in p for p in found):
            problems.append("app-settings did not report a setting missing from the Bicep")
        if any("CDC_LOG_FORMAT" in p for p in found):
            problems.append("app-settings reported a local-only setting")
        if any("FullLoad" in p for p in found):
            problems.append("app-settings read a row of a table that is not the settings table")
        (root / "docs" / "settings.md").unlink()
        if not any("docs/settings.md missing" in p for p in check_app_settings(root, [bad])):
            problems.append("app-settings did not fail on a missing docs/settings.md")
    return problems


# --------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[2])
    args = parser.parse_args()
    repo = args.repo.resolve()
    started = time.monotonic()
    shared = find_shared(repo)
    schema = shared / "schemas" / "azure.yaml.schema.json" if shared else None
    files = bicep_files(repo)
    results = Results()

    results.record("bicep-parse", check_bicep_parse(files), f"{len(files)} files")
    results.record("modules", check_modules(files))
    results.record("azure-yaml", check_azure_yaml(repo, schema))
    results.record("main-bicep", check_main_bicep(repo))
    results.record("parameters", check_parameters(repo))
    results.record("role-guids", check_role_guids(files, shared))
    results.record("no-secrets", check_no_secrets(files, repo / "infra" / "main.parameters.json"))
    results.record("app-settings", check_app_settings(repo, files))
    fj_problems, fj_note = check_function_json(repo)
    results.record("function-json", fj_problems, fj_note)
    results.record("compose", check_compose(repo))
    results.record("gitignore", check_gitignore(repo))
    results.record("self-test", self_test(shared))

    print(f"({time.monotonic() - started:.1f}s, shared/ at {shared})")
    print(f"infra: {results.passed} passed, {results.failed} failed")
    return 1 if results.failed else 0


if __name__ == "__main__":
    sys.exit(main())
