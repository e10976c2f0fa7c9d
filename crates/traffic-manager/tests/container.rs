//! The container image (`Dockerfile`) and the compose stack (`compose.yaml` and
//! `deploy/compose/`), checked without a container runtime: the rules that matter are
//! read off the files, each setting the stack gives the service is checked by the binary
//! itself, and hadolint, the Compose Specification's schema and promtool run when the
//! test command provides them (`TM_TEST_HADOLINT`, `TM_TEST_CHECK_JSONSCHEMA`,
//! `TM_TEST_PROMTOOL`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml_ng::{Mapping, Value};

const BIN: &str = env!("CARGO_BIN_EXE_traffic-manager");

/// Where compose.yaml mounts the directories other parts of the repository own: the
/// Prometheus rules and the Grafana dashboards. Mounted whole, they may not exist yet
/// in a checkout that lacks them; every other mounted path must.
const RULES_DIR: &str = "deploy/prometheus";
const DASHBOARDS_DIR: &str = "deploy/grafana";

/// Stand-ins for the variables compose.yaml requires (`${NAME:?…}`), in the formats the
/// header of compose.yaml asks for.
const SAMPLE_VARIABLES: &[(&str, &str)] = &[
    ("POSTGRES_PASSWORD", "3f9c0a5d1e7b2c4f6a8d0e2b4c6a8f1d"),
    ("DB_PASSWORD", "9b1d3f5a7c9e1b3d5f7a9c1e3b5d7f9a"),
    ("REPLICATION_PASSWORD", "c2e4a6b8d0f2c4e6a8b0d2f4c6e8a0b2"),
    (
        "TM_BOOTSTRAP_ADMIN_KEY",
        "5e7a9c1b3d5f7e9a1c3b5d7f9e1a3c5b7d9f1e3a5c7b9d1f3e5a7c9b1d3f5e7a",
    ),
    (
        "TM_SECRETS_KEY",
        "compose:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
    ),
    ("GRAFANA_ADMIN_PASSWORD", "7d9f1b3e5a7c9d1f3b5e7a9c1d3f5b7e"),
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(relative: &str) -> String {
    let path = repo().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------
// The Dockerfile
// ---------------------------------------------------------------------------------------

/// One instruction: its keyword in capitals, its arguments with continuation lines
/// joined, and the line it starts on.
#[derive(Debug)]
struct Instruction {
    line: usize,
    keyword: String,
    args: String,
}

/// A build stage: the image or stage it starts from, its name, its instructions.
#[derive(Debug)]
struct Stage {
    base: String,
    name: Option<String>,
    instructions: Vec<Instruction>,
}

impl Stage {
    fn all<'a>(&'a self, keyword: &'a str) -> impl Iterator<Item = &'a Instruction> + 'a {
        self.instructions
            .iter()
            .filter(move |i| i.keyword == keyword)
    }
}

/// The Dockerfile's instructions, as the builder reads them: comment lines dropped (also
/// inside a continued instruction), lines ending in `\` joined to the next.
fn instructions(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (index, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && pending.is_none()) {
            continue;
        }
        let (continued, body) = match trimmed.strip_suffix('\\') {
            Some(body) => (true, body.trim_end()),
            None => (false, trimmed),
        };
        let (line, mut joined) = pending.take().unwrap_or((index + 1, String::new()));
        if !joined.is_empty() && !body.is_empty() {
            joined.push(' ');
        }
        joined.push_str(body);
        if continued {
            pending = Some((line, joined));
        } else if !joined.is_empty() {
            let (keyword, args) = joined
                .split_once(char::is_whitespace)
                .unwrap_or((&joined, ""));
            out.push(Instruction {
                line,
                keyword: keyword.to_ascii_uppercase(),
                args: args.trim().to_owned(),
            });
        }
    }
    assert!(
        pending.is_none(),
        "the Dockerfile ends inside a continued line"
    );
    out
}

fn stages() -> Vec<Stage> {
    let mut stages: Vec<Stage> = Vec::new();
    for instruction in instructions(&read("Dockerfile")) {
        if instruction.keyword == "FROM" {
            let words: Vec<&str> = instruction
                .args
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            let name = match words.as_slice() {
                [_, alias, name] if alias.eq_ignore_ascii_case("as") => Some((*name).to_owned()),
                [_] => None,
                _ => panic!(
                    "line {}: unreadable FROM {:?}",
                    instruction.line, instruction.args
                ),
            };
            stages.push(Stage {
                base: words[0].to_owned(),
                name,
                instructions: Vec::new(),
            });
        } else {
            let Some(stage) = stages.last_mut() else {
                assert_eq!(instruction.keyword, "ARG", "only ARG may come before FROM");
                continue;
            };
            stage.instructions.push(instruction);
        }
    }
    stages
}

fn final_stage(stages: &[Stage]) -> &Stage {
    stages.last().expect("the Dockerfile has a FROM")
}

/// Why `reference` is not pinned to a version, if it is not: a tag other than `latest`,
/// or a digest, with no variable left to expand.
fn unpinned(reference: &str) -> Option<&'static str> {
    if reference.contains('$') {
        return Some("names its version through a variable; write it out");
    }
    if reference.contains("@sha256:") {
        return None;
    }
    let last = reference.rsplit('/').next().unwrap_or(reference);
    match last.split_once(':') {
        None => Some("has no tag"),
        Some((_, "latest")) => Some("is tagged latest"),
        Some((_, "")) => Some("has an empty tag"),
        Some(_) => None,
    }
}

/// The `key=value` pairs of an `ENV` (or `LABEL`) instruction; also the older `ENV key value`.
fn pairs(args: &str) -> Vec<(String, String)> {
    if !args.split_whitespace().next().unwrap_or("").contains('=') {
        let (key, value) = args.split_once(char::is_whitespace).unwrap_or((args, ""));
        return vec![(key.to_owned(), value.trim().to_owned())];
    }
    let mut out = Vec::new();
    let mut rest = args.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').expect("closing quote");
            (&quoted[..end], &quoted[end + 1..])
        } else {
            after.split_once(char::is_whitespace).unwrap_or((after, ""))
        };
        out.push((key.trim().to_owned(), value.to_owned()));
        rest = next.trim_start();
    }
    out
}

/// The environment the final stage gives the process.
fn image_env() -> BTreeMap<String, String> {
    final_stage(&stages())
        .all("ENV")
        .flat_map(|i| pairs(&i.args))
        .collect()
}

/// An exec-form instruction's words; `None` for the shell form.
fn exec_form(instruction: &Instruction) -> Option<Vec<String>> {
    serde_json::from_str::<Vec<String>>(&instruction.args).ok()
}

#[test]
fn dockerfile_builds_in_one_stage_and_runs_the_binary_in_another() {
    let stages = stages();
    assert!(
        stages.len() >= 2,
        "a multi-stage build: a builder and a runtime stage"
    );
    let last = final_stage(&stages);
    let earlier: Vec<&str> = stages[..stages.len() - 1]
        .iter()
        .filter_map(|s| s.name.as_deref())
        .collect();
    assert!(
        !earlier.contains(&last.base.as_str()),
        "the runtime stage starts from a clean image, not from the builder"
    );
    assert!(
        last.all("RUN").next().is_none(),
        "the runtime stage runs nothing at build time (no shell, nothing to install)"
    );
    let copies_binary = last.all("COPY").any(|c| {
        let from = c
            .args
            .split_whitespace()
            .find_map(|w| w.strip_prefix("--from="));
        from.is_some_and(|f| earlier.contains(&f)) && c.args.ends_with("/traffic-manager")
    });
    assert!(
        copies_binary,
        "the runtime stage copies the binary from the builder"
    );
}

#[test]
fn dockerfile_builds_the_release_binary_from_the_lock_file() {
    let stages = stages();
    let builds: Vec<&Instruction> = stages[..stages.len() - 1]
        .iter()
        .flat_map(|s| s.all("RUN"))
        .filter(|i| i.args.contains("cargo build"))
        .collect();
    assert!(!builds.is_empty(), "a builder stage runs cargo build");
    for build in builds {
        for flag in ["--locked", "--release"] {
            assert!(
                build.args.split_whitespace().any(|w| w == flag),
                "line {}: cargo build without {flag}",
                build.line
            );
        }
    }
}

#[test]
fn dockerfile_pins_every_base_image() {
    let stages = stages();
    let mut names = BTreeSet::new();
    for stage in &stages {
        if !names.contains(stage.base.as_str()) {
            if let Some(why) = unpinned(&stage.base) {
                panic!("FROM {}: the image {why}", stage.base);
            }
        }
        if let Some(name) = &stage.name {
            names.insert(name.as_str());
        }
    }
}

#[test]
fn dockerfile_runs_as_a_numeric_non_root_user() {
    let stages = stages();
    let user = final_stage(&stages)
        .all("USER")
        .last()
        .expect("the runtime stage sets USER");
    let (uid, gid) = user.args.split_once(':').unwrap_or((&user.args, "1"));
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    assert!(
        numeric(uid) && numeric(gid),
        "USER {}: numeric, so that the runtime can tell it is not root",
        user.args
    );
    assert_ne!(
        uid.parse::<u32>().unwrap(),
        0,
        "USER {}: not root",
        user.args
    );
}

#[test]
fn dockerfile_has_no_healthcheck() {
    let found: Vec<usize> = stages()
        .iter()
        .flat_map(|s| s.all("HEALTHCHECK"))
        .map(|i| i.line)
        .collect();
    assert!(
        found.is_empty(),
        "HEALTHCHECK at lines {found:?}: probes belong to the orchestrator"
    );
}

#[test]
fn dockerfile_starts_the_binary_in_exec_form() {
    let stages = stages();
    let last = final_stage(&stages);
    let entrypoint = last.all("ENTRYPOINT").last().expect("an ENTRYPOINT");
    let words = exec_form(entrypoint).expect("ENTRYPOINT in exec form (a JSON array)");
    assert_eq!(words, ["traffic-manager"], "the binary, found on PATH");
    let cmd = last.all("CMD").last().expect("a CMD");
    assert_eq!(exec_form(cmd).expect("CMD in exec form"), ["serve"]);
    // A bare name is looked up on the image's PATH.
    let path_dirs = [
        "/usr/local/bin",
        "/usr/bin",
        "/bin",
        "/usr/local/sbin",
        "/usr/sbin",
    ];
    let on_path = last.all("COPY").any(|c| {
        let dest = c.args.split_whitespace().last().unwrap_or("");
        dest.strip_suffix("/traffic-manager")
            .is_some_and(|dir| path_dirs.contains(&dir))
    });
    assert!(on_path, "the binary is copied into a directory on PATH");
}

#[test]
fn dockerfile_listens_on_all_interfaces_and_keeps_data_on_a_volume_of_its_user() {
    let stages = stages();
    let last = final_stage(&stages);
    let env = image_env();
    let listen = env.get("TM_LISTEN").expect("ENV TM_LISTEN");
    let port = listen
        .strip_prefix("0.0.0.0:")
        .expect("TM_LISTEN on 0.0.0.0");
    let exposed: Vec<&str> = last
        .all("EXPOSE")
        .flat_map(|i| i.args.split_whitespace())
        .collect();
    assert!(
        exposed.iter().any(|e| e.trim_end_matches("/tcp") == port),
        "EXPOSE {port} (TM_LISTEN's port); exposed: {exposed:?}"
    );
    let data_dir = env.get("TM_DATA_DIR").expect("ENV TM_DATA_DIR");
    let volumes: Vec<String> = last
        .all("VOLUME")
        .flat_map(|i| exec_form(i).unwrap_or_else(|| vec![i.args.clone()]))
        .collect();
    assert!(
        volumes.contains(data_dir),
        "VOLUME {data_dir}; volumes: {volumes:?}"
    );
    let user = last.all("USER").last().expect("USER").args.clone();
    let owner = if user.contains(':') {
        user
    } else {
        format!("{user}:{user}")
    };
    let owned = last.all("COPY").any(|c| {
        c.args.contains(&format!("--chown={owner}")) && c.args.ends_with(data_dir.as_str())
    });
    assert!(
        owned,
        "the data directory {data_dir} is created owned by {owner}"
    );
}

#[test]
fn dockerignore_admits_what_the_build_copies_and_nothing_else() {
    let patterns: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        patterns.first().map(String::as_str),
        Some("*"),
        "the context is an allow-list: everything is left out, then what the build needs let in"
    );
    let admitted: BTreeSet<&str> = patterns
        .iter()
        .filter_map(|p| p.strip_prefix('!'))
        .map(|p| p.trim_end_matches('/'))
        .collect();
    for kept_out in ["target", ".git", "data", ".env"] {
        assert!(
            !admitted.contains(kept_out),
            "{kept_out} must stay out of the build context"
        );
    }
    let stages = stages();
    for copy in stages.iter().flat_map(|s| s.all("COPY")) {
        let words: Vec<&str> = copy
            .args
            .split_whitespace()
            .filter(|w| !w.starts_with("--"))
            .collect();
        if copy.args.contains("--from=") {
            continue;
        }
        for source in &words[..words.len() - 1] {
            let source = source.trim_end_matches('/');
            assert!(
                admitted.contains(source),
                "line {}: {source} is copied but ignored",
                copy.line
            );
            assert!(
                repo().join(source).exists(),
                "line {}: {source} does not exist",
                copy.line
            );
        }
    }
}

/// hadolint on the Dockerfile: no finding at warning level or above. The test command
/// provides hadolint through `TM_TEST_HADOLINT`; elsewhere the check says it was not run.
#[test]
fn dockerfile_passes_hadolint() {
    let Ok(hadolint) = std::env::var("TM_TEST_HADOLINT") else {
        eprintln!("TM_TEST_HADOLINT is not set: hadolint not run");
        return;
    };
    let out = Command::new(hadolint)
        .current_dir(repo())
        .args(["--no-color", "--format", "json", "Dockerfile"])
        .output()
        .expect("hadolint runs");
    let findings: Vec<serde_json::Value> =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "hadolint's output is not JSON ({e}): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let serious: Vec<String> = findings
        .iter()
        .filter(|f| matches!(f["level"].as_str(), Some("error" | "warning")))
        .map(|f| format!("line {}: {} {}", f["line"], f["code"], f["message"]))
        .collect();
    assert!(serious.is_empty(), "hadolint:\n{}", serious.join("\n"));
}

// ---------------------------------------------------------------------------------------
// compose.yaml
// ---------------------------------------------------------------------------------------

/// compose.yaml as Compose reads it: merge keys applied, `${…}` expanded with
/// [`SAMPLE_VARIABLES`]; and the variables it requires.
struct Compose {
    doc: Value,
    required: BTreeSet<String>,
}

impl Compose {
    fn load() -> Compose {
        let mut doc: Value =
            serde_yaml_ng::from_str(&read("compose.yaml")).expect("compose.yaml is YAML");
        doc.apply_merge().expect("merge keys");
        let vars: BTreeMap<&str, &str> = SAMPLE_VARIABLES.iter().copied().collect();
        let mut required = BTreeSet::new();
        expand_all(&mut doc, &vars, &mut required);
        Compose { doc, required }
    }

    fn services(&self) -> impl Iterator<Item = (&str, &Mapping)> {
        self.doc["services"]
            .as_mapping()
            .expect("services")
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().expect("service name"),
                    v.as_mapping().expect("service"),
                )
            })
    }

    fn service(&self, name: &str) -> Option<&Mapping> {
        self.doc["services"].get(name).and_then(Value::as_mapping)
    }

    /// The services running the image this repository builds.
    fn traffic_manager(&self) -> Vec<(&str, &Mapping)> {
        let built: Vec<&str> = self
            .services()
            .filter(|(_, s)| s.contains_key("build"))
            .map(|(_, s)| {
                s["image"]
                    .as_str()
                    .expect("a built service names its image")
            })
            .collect();
        assert_eq!(
            built.len(),
            1,
            "one service builds the image, the others run it"
        );
        self.services()
            .filter(|(_, s)| s.get("image").and_then(Value::as_str) == Some(built[0]))
            .collect()
    }

    /// The first service whose image is `repository:<tag>`.
    fn by_image(&self, repository: &str) -> (&str, &Mapping) {
        self.services()
            .find(|(_, s)| {
                s["image"]
                    .as_str()
                    .and_then(|i| i.rsplit_once(':'))
                    .is_some_and(|(r, _)| r == repository)
            })
            .unwrap_or_else(|| panic!("no service runs {repository}"))
    }
}

/// Expands the variables in every string of `value` as Compose does.
fn expand_all(value: &mut Value, vars: &BTreeMap<&str, &str>, required: &mut BTreeSet<String>) {
    match value {
        Value::String(s) => *s = expand(s, vars, required).unwrap_or_else(|e| panic!("{s:?}: {e}")),
        Value::Sequence(items) => items.iter_mut().for_each(|v| expand_all(v, vars, required)),
        Value::Mapping(map) => map.values_mut().for_each(|v| expand_all(v, vars, required)),
        _ => {}
    }
}

/// `$$`, `$NAME`, `${NAME}`, `${NAME:-default}`, `${NAME-default}`, `${NAME:?error}`,
/// `${NAME?error}`, `${NAME:+other}`, `${NAME+other}`.
fn expand(
    text: &str,
    vars: &BTreeMap<&str, &str>,
    required: &mut BTreeSet<String>,
) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(next) = after.strip_prefix('$') {
            out.push('$');
            rest = next;
        } else if let Some(braced) = after.strip_prefix('{') {
            let end = braced.find('}').ok_or("unclosed ${")?;
            out.push_str(&substitute(&braced[..end], vars, required)?);
            rest = &braced[end + 1..];
        } else {
            let len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if len == 0 {
                return Err("a lone $ (write $$)".into());
            }
            out.push_str(vars.get(&after[..len]).copied().unwrap_or(""));
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn substitute(
    inner: &str,
    vars: &BTreeMap<&str, &str>,
    required: &mut BTreeSet<String>,
) -> Result<String, String> {
    let len = inner
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(inner.len());
    let (name, op) = inner.split_at(len);
    if name.is_empty() || op.contains('$') {
        return Err(format!("${{{inner}}}: not a variable this test expands"));
    }
    let value = vars.get(name).copied();
    let set_nonempty = value.is_some_and(|v| !v.is_empty());
    let (kind, arg) = [":-", ":?", ":+", "-", "?", "+"]
        .iter()
        .find_map(|k| op.strip_prefix(k).map(|a| (*k, a)))
        .unwrap_or(("", op));
    if kind.is_empty() && !op.is_empty() {
        return Err(format!("${{{inner}}}: unknown modifier"));
    }
    Ok(match kind {
        "" => value.unwrap_or("").to_owned(),
        ":-" if set_nonempty => value.unwrap_or("").to_owned(),
        "-" if value.is_some() => value.unwrap_or("").to_owned(),
        ":-" | "-" => arg.to_owned(),
        ":?" | "?" => {
            required.insert(name.to_owned());
            let Some(value) = value else {
                return Err(format!(
                    "{name} is required; give it a sample value in SAMPLE_VARIABLES"
                ));
            };
            value.to_owned()
        }
        ":+" if set_nonempty => arg.to_owned(),
        "+" if value.is_some() => arg.to_owned(),
        _ => String::new(),
    })
}

/// A service's environment, from either of Compose's forms.
fn environment(service: &Mapping) -> BTreeMap<String, String> {
    assert!(
        !service.contains_key("env_file"),
        "settings are given in `environment`, where they are checked"
    );
    let scalar = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => panic!("an environment value that is not a scalar: {other:?}"),
    };
    match service.get("environment") {
        None => BTreeMap::new(),
        Some(Value::Mapping(map)) => map.iter().map(|(k, v)| (scalar(k), scalar(v))).collect(),
        Some(Value::Sequence(items)) => items
            .iter()
            .map(|i| {
                let item = scalar(i);
                let (k, v) = item.split_once('=').unwrap_or((&item, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect(),
        Some(other) => panic!("environment: {other:?}"),
    }
}

/// A service's `depends_on` as (service, condition).
fn depends_on(service: &Mapping) -> Vec<(String, String)> {
    match service.get("depends_on") {
        None => Vec::new(),
        Some(Value::Sequence(names)) => names
            .iter()
            .map(|n| {
                (
                    n.as_str().expect("name").to_owned(),
                    "service_started".to_owned(),
                )
            })
            .collect(),
        Some(Value::Mapping(map)) => map
            .iter()
            .map(|(k, v)| {
                let condition = v
                    .get("condition")
                    .and_then(Value::as_str)
                    .unwrap_or("service_started");
                (k.as_str().expect("name").to_owned(), condition.to_owned())
            })
            .collect(),
        Some(other) => panic!("depends_on: {other:?}"),
    }
}

/// A mount: bind (a path of the repository) or named volume, and where it goes.
#[derive(Debug)]
struct Mount {
    source: String,
    target: String,
    bind: bool,
}

fn mounts(service: &Mapping) -> Vec<Mount> {
    let Some(volumes) = service.get("volumes").and_then(Value::as_sequence) else {
        return Vec::new();
    };
    volumes
        .iter()
        .map(|v| match v {
            Value::String(short) => {
                let mut parts = short.split(':');
                let source = parts.next().unwrap_or_default().to_owned();
                let target = parts
                    .next()
                    .unwrap_or_else(|| panic!("volume {short:?} has no target"))
                    .to_owned();
                let bind = source.starts_with(['.', '/', '~']);
                Mount {
                    source,
                    target,
                    bind,
                }
            }
            Value::Mapping(long) => Mount {
                source: long["source"].as_str().expect("source").to_owned(),
                target: long["target"].as_str().expect("target").to_owned(),
                bind: long["type"].as_str() == Some("bind"),
            },
            other => panic!("volume {other:?}"),
        })
        .collect()
}

/// The repository path a bind mount's source names.
fn repo_path(source: &str) -> String {
    let relative = source.strip_prefix("./").unwrap_or_else(|| {
        panic!("{source}: bind mounts name paths of the repository, relative to compose.yaml (./…)")
    });
    relative.trim_end_matches('/').to_owned()
}

/// The file of the repository that `service` sees at `container_path`.
fn mounted_file(service: &Mapping, container_path: &str) -> PathBuf {
    mounts(service)
        .iter()
        .filter(|m| m.bind)
        .find_map(|m| {
            let rest = container_path.strip_prefix(m.target.as_str())?;
            let source = repo().join(repo_path(&m.source));
            match rest.strip_prefix('/') {
                _ if rest.is_empty() => Some(source),
                Some(inside) => Some(source.join(inside)),
                None => None,
            }
        })
        .unwrap_or_else(|| panic!("nothing of the repository is mounted at {container_path}"))
}

/// The container path where `service` mounts the repository's `dir`.
fn mount_point(service: &Mapping, dir: &str) -> String {
    mounts(service)
        .into_iter()
        .find(|m| m.bind && repo_path(&m.source) == dir)
        .map(|m| m.target)
        .unwrap_or_else(|| panic!("{dir} is not mounted (whole, as a directory)"))
}

/// `host` and `port` of `scheme://user:password@host:port/path` or `host:port`.
fn host_port(url: &str) -> (String, Option<u16>) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    match hostport.rsplit_once(':') {
        Some((host, port)) => (host.to_owned(), Some(port.parse().expect("a numeric port"))),
        None => (hostport.to_owned(), None),
    }
}

fn listen_port(env: &BTreeMap<String, String>) -> u16 {
    let listen = env
        .get("TM_LISTEN")
        .expect("TM_LISTEN, from the image or the service");
    host_port(listen).1.expect("TM_LISTEN has a port")
}

/// A traffic-manager service's subcommand (`serve` when it gives none: the image's CMD).
fn subcommand(service: &Mapping) -> String {
    service
        .get("command")
        .and_then(Value::as_sequence)
        .and_then(|c| c.first())
        .and_then(Value::as_str)
        .unwrap_or("serve")
        .to_owned()
}

/// The environment a traffic-manager service's process sees: the image's, then the service's.
fn process_env(service: &Mapping) -> BTreeMap<String, String> {
    let mut env = image_env();
    env.extend(environment(service));
    env
}

#[test]
fn compose_pins_every_image() {
    let compose = Compose::load();
    for (name, service) in compose.services() {
        let image = service
            .get("image")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("service {name} names its image"));
        if let Some(why) = unpinned(image) {
            panic!("service {name}: {image} {why}");
        }
    }
}

#[test]
fn compose_dependencies_exist_and_can_be_waited_for() {
    let compose = Compose::load();
    for (name, service) in compose.services() {
        for (target, condition) in depends_on(service) {
            let Some(dep) = compose.service(&target) else {
                panic!("{name} depends on {target}, which is not a service");
            };
            match condition.as_str() {
                "service_started" => {}
                "service_healthy" => {
                    let check = dep.get("healthcheck").unwrap_or_else(|| {
                        panic!("{name} waits for {target} to be healthy, but it has no healthcheck")
                    });
                    assert_ne!(check.get("disable").and_then(Value::as_bool), Some(true));
                }
                "service_completed_successfully" => {
                    let restart = dep.get("restart").and_then(Value::as_str).unwrap_or("no");
                    assert!(
                        matches!(restart, "no" | "on-failure") || restart.starts_with("on-failure:"),
                        "{name} waits for {target} to complete, but `restart: {restart}` runs it again"
                    );
                }
                other => panic!("{name} -> {target}: unknown condition {other}"),
            }
        }
    }
}

/// Every `TM_*` name the stack sets is one the service reads: the binary is given them
/// all as keys of a configuration file, where an unknown key is refused by name (in the
/// environment it would be ignored). A name known not to be a setting shows the check
/// can fail.
#[test]
fn compose_sets_only_real_settings() {
    let compose = Compose::load();
    let control = "TM_NOT_A_SETTING_AT_ALL";
    let mut names: BTreeSet<String> = compose
        .services()
        .flat_map(|(_, s)| environment(s).into_keys())
        .filter(|k| k.starts_with("TM_") && k != "TM_CONFIG")
        .collect();
    assert!(
        names.len() > 5,
        "the stack configures the service: {names:?}"
    );
    names.insert(control.to_owned());
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("settings.toml");
    let toml: String = names
        .iter()
        .map(|n| {
            format!(
                "{} = \"\"\n",
                n.trim_start_matches("TM_").to_ascii_lowercase()
            )
        })
        .collect();
    std::fs::write(&file, toml).expect("write");
    let out = Command::new(BIN)
        .env_clear()
        .arg("--config")
        .arg(&file)
        .arg("check-config")
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let refused: BTreeSet<&str> = stderr
        .lines()
        .filter(|l| l.contains("is not a setting"))
        .filter_map(|l| l.trim().split(':').next())
        .collect();
    assert_eq!(
        refused,
        BTreeSet::from([control]),
        "not settings of the service:\n{stderr}"
    );
}

/// Each traffic-manager process of the stack starts from a valid configuration: the
/// binary's `check-config` accepts the image's environment with the service's on top.
#[test]
fn compose_gives_every_process_a_valid_configuration() {
    let compose = Compose::load();
    let services = compose.traffic_manager();
    assert!(
        services.len() >= 4,
        "migrate, two API instances and a worker: {}",
        services.len()
    );
    for (name, service) in services {
        let command = subcommand(service);
        assert!(
            ["serve", "worker", "migrate"].contains(&command.as_str()),
            "{name} runs {command}"
        );
        let out = Command::new(BIN)
            .env_clear()
            .envs(process_env(service))
            .arg("check-config")
            .output()
            .expect("the binary runs");
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let effective = String::from_utf8_lossy(&out.stdout);
        assert!(
            effective.contains("db_transaction_pooling = true"),
            "{name}: through PgBouncer:\n{effective}"
        );
        assert!(
            effective.contains("profile = \"prod\""),
            "{name}: the prod profile"
        );
    }
}

/// The stack's shape: two API instances that leave jobs to a worker, all behind one
/// migration, each with its own data directory.
#[test]
fn compose_runs_two_api_instances_and_a_worker_after_the_migration() {
    let compose = Compose::load();
    let services = compose.traffic_manager();
    let by_command = |c: &str| -> Vec<&str> {
        services
            .iter()
            .filter(|(_, s)| subcommand(s) == c)
            .map(|(n, _)| *n)
            .collect()
    };
    let (serve, worker, migrate) = (
        by_command("serve"),
        by_command("worker"),
        by_command("migrate"),
    );
    assert_eq!(
        (serve.len(), worker.len(), migrate.len()),
        (2, 1, 1),
        "{services:?}"
    );
    for (name, service) in &services {
        let env = process_env(service);
        assert_eq!(
            host_port(&env["TM_LISTEN"]).0,
            "0.0.0.0",
            "{name} listens on all interfaces"
        );
        if subcommand(service) == "migrate" {
            continue;
        }
        if subcommand(service) == "serve" {
            assert_eq!(
                env.get("TM_JOBS_IN_SERVE").map(String::as_str),
                Some("false"),
                "{name}: jobs run in the worker"
            );
        }
        assert!(
            depends_on(service).contains(&(
                migrate[0].to_owned(),
                "service_completed_successfully".to_owned()
            )),
            "{name} starts after the migration has succeeded"
        );
        let data_dir = &env["TM_DATA_DIR"];
        let volume = mounts(service).into_iter().find(|m| &m.target == data_dir);
        assert!(
            volume.is_some_and(|m| !m.bind),
            "{name} keeps {data_dir} on a named volume"
        );
    }
    let volumes: Vec<String> = services
        .iter()
        .flat_map(|(_, s)| mounts(s))
        .filter(|m| !m.bind)
        .map(|m| m.source)
        .collect();
    let distinct: BTreeSet<&String> = volumes.iter().collect();
    assert_eq!(
        distinct.len(),
        volumes.len(),
        "each process has a data directory of its own"
    );
}

/// Every host named in the service's URLs (database, PgBouncer's direct bypass, the
/// replicas, Redis, Kafka) is a service of the stack, and PgBouncer stands where the
/// README's PgBouncer section puts it.
#[test]
fn compose_connects_the_service_through_pgbouncer_to_the_stack() {
    let compose = Compose::load();
    for (name, service) in compose.traffic_manager() {
        let env = process_env(service);
        for key in [
            "TM_DATABASE_URL",
            "TM_DATABASE_DIRECT_URL",
            "TM_DATABASE_REPLICA_URLS",
            "TM_REDIS_URL",
            "TM_KAFKA_BROKERS",
        ] {
            let value = env.get(key).unwrap_or_else(|| panic!("{name} sets {key}"));
            for url in value.split(',') {
                let (host, _) = host_port(url);
                assert!(
                    compose.service(&host).is_some(),
                    "{name}: {key} names {host}, not a service"
                );
            }
        }
        let (bouncer, bouncer_port) = host_port(&env["TM_DATABASE_URL"]);
        let (direct, direct_port) = host_port(&env["TM_DATABASE_DIRECT_URL"]);
        let database = env["TM_DATABASE_URL"]
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_owned();
        let ini = pgbouncer_ini(compose.service(&bouncer).expect("PgBouncer"));
        let setting =
            |section: &str, key: &str| ini.get(&(section.to_owned(), key.to_owned())).cloned();
        assert_eq!(
            setting("pgbouncer", "listen_port").map(|p| p.parse::<u16>().unwrap()),
            bouncer_port
        );
        let target = setting("databases", &database)
            .unwrap_or_else(|| panic!("PgBouncer serves database {database}"));
        assert!(
            target.contains(&format!("host={direct}")),
            "PgBouncer fronts {direct}: {target}"
        );
        assert!(
            target.contains(&format!("port={}", direct_port.unwrap_or(5432))),
            "{target}"
        );
        assert!(compose.service(&direct).expect("PostgreSQL")["image"]
            .as_str()
            .unwrap()
            .starts_with("postgres:"));
        for (key, value) in [
            ("pool_mode", "transaction"),
            ("server_reset_query", "DEALLOCATE ALL"),
            ("server_reset_query_always", "1"),
        ] {
            assert_eq!(
                setting("pgbouncer", key).as_deref(),
                Some(value),
                "PgBouncer's {key}"
            );
        }
        let ignored = setting("pgbouncer", "ignore_startup_parameters").unwrap_or_default();
        assert!(
            ignored.split(',').any(|p| p.trim() == "extra_float_digits"),
            "ignore_startup_parameters: {ignored}"
        );
    }
}

/// PgBouncer's ini file as (section, key) -> value.
fn pgbouncer_ini(service: &Mapping) -> BTreeMap<(String, String), String> {
    let ini = mounts(service)
        .into_iter()
        .find(|m| m.bind && m.target.ends_with(".ini"))
        .expect("PgBouncer's configuration is mounted from the repository");
    let text = std::fs::read_to_string(repo().join(repo_path(&ini.source))).expect("the ini file");
    let mut section = String::new();
    let mut out = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with([';', '#']) {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
        } else if let Some((key, value)) = line.split_once('=') {
            out.insert(
                (section.clone(), key.trim().to_owned()),
                value.trim().to_owned(),
            );
        }
    }
    out
}

/// Every path of the repository that the stack mounts exists, and the build context
/// has its Dockerfile; named volumes are declared. Only the rules and dashboards
/// directories may be missing, in a checkout that does not have them yet.
#[test]
fn compose_mounts_only_what_exists() {
    let compose = Compose::load();
    let declared: BTreeSet<&str> = compose.doc["volumes"]
        .as_mapping()
        .map(|m| m.keys().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut bound = 0;
    for (name, service) in compose.services() {
        for mount in mounts(service) {
            if !mount.bind {
                assert!(
                    declared.contains(mount.source.as_str()),
                    "{name}: volume {} is not declared",
                    mount.source
                );
                continue;
            }
            bound += 1;
            let path = repo_path(&mount.source);
            if path == RULES_DIR || path == DASHBOARDS_DIR {
                continue;
            }
            assert!(
                repo().join(&path).exists(),
                "{name} mounts {path}, which does not exist"
            );
        }
        if let Some(build) = service.get("build") {
            let context = build
                .get("context")
                .and_then(Value::as_str)
                .or(build.as_str())
                .expect("context");
            assert!(
                repo().join(context).join("Dockerfile").is_file(),
                "{name} builds {context}/Dockerfile"
            );
        }
    }
    assert!(
        bound > 5,
        "the stack's configuration comes from the repository"
    );
    for kind in ["configs", "secrets"] {
        for (key, entry) in compose
            .doc
            .get(kind)
            .and_then(Value::as_mapping)
            .into_iter()
            .flatten()
        {
            if let Some(file) = entry.get("file").and_then(Value::as_str) {
                assert!(
                    repo().join(repo_path(file)).is_file(),
                    "{kind} {key:?}: {file} does not exist"
                );
            }
        }
    }
}

/// Prometheus loads the repository's rules (deploy/prometheus/, mounted whole) and
/// scrapes every long-running traffic-manager process on its TM_LISTEN port.
#[test]
fn prometheus_loads_the_rules_and_scrapes_every_process() {
    let compose = Compose::load();
    let (_, prometheus) = compose.by_image("prom/prometheus");
    assert!(
        !prometheus.contains_key("command"),
        "the image's own arguments read /etc/prometheus/prometheus.yml"
    );
    let config = prometheus_config(prometheus);
    let rules_at = mount_point(prometheus, RULES_DIR);
    let rule_files: BTreeSet<String> = config["rule_files"]
        .as_sequence()
        .expect("rule_files")
        .iter()
        .map(|f| {
            let f = f.as_str().expect("a path");
            let name = f
                .strip_prefix(&format!("{rules_at}/"))
                .unwrap_or_else(|| panic!("{f} is not in {rules_at}"));
            let in_repo = repo().join(RULES_DIR).join(name);
            assert!(
                !repo().join(RULES_DIR).exists() || in_repo.is_file(),
                "{} does not exist",
                in_repo.display()
            );
            name.to_owned()
        })
        .collect();
    assert_eq!(
        rule_files,
        BTreeSet::from(["alerts.yml".to_owned(), "recording.yml".to_owned()])
    );

    let targets: BTreeSet<String> = config["scrape_configs"]
        .as_sequence()
        .expect("scrape_configs")
        .iter()
        .flat_map(|job| {
            job["static_configs"]
                .as_sequence()
                .cloned()
                .unwrap_or_default()
        })
        .flat_map(|sc| sc["targets"].as_sequence().cloned().unwrap_or_default())
        .map(|t| t.as_str().expect("a target").to_owned())
        .collect();
    for target in &targets {
        let (host, port) = host_port(target);
        assert!(
            host == "localhost" || compose.service(&host).is_some(),
            "target {target} is not a service"
        );
        assert!(port.is_some(), "target {target} has a port");
    }
    for (name, service) in compose.traffic_manager() {
        if subcommand(service) == "migrate" {
            continue;
        }
        let expected = format!("{name}:{}", listen_port(&process_env(service)));
        assert!(
            targets.contains(&expected),
            "Prometheus scrapes {expected}; targets: {targets:?}"
        );
    }
}

fn prometheus_config(prometheus: &Mapping) -> Value {
    let path = mounted_file(prometheus, "/etc/prometheus/prometheus.yml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).expect("Prometheus's configuration is YAML")
}

/// `promtool check config` on the stack's Prometheus configuration, with its rule files
/// taken from the repository when they are there. The test command provides promtool
/// through `TM_TEST_PROMTOOL`; elsewhere the check says it was not run.
#[test]
fn prometheus_configuration_passes_promtool() {
    let Ok(promtool) = std::env::var("TM_TEST_PROMTOOL") else {
        eprintln!("TM_TEST_PROMTOOL is not set: promtool check not run");
        return;
    };
    let compose = Compose::load();
    let (_, prometheus) = compose.by_image("prom/prometheus");
    let mut config = prometheus_config(prometheus);
    let rules_at = mount_point(prometheus, RULES_DIR);
    let local: Vec<Value> = config["rule_files"]
        .as_sequence()
        .expect("rule_files")
        .iter()
        .filter_map(|f| {
            let name = f.as_str()?.strip_prefix(&format!("{rules_at}/"))?;
            let path = repo().join(RULES_DIR).join(name);
            path.is_file()
                .then(|| Value::String(path.display().to_string()))
        })
        .collect();
    config["rule_files"] = Value::Sequence(local);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("prometheus.yml");
    std::fs::write(&file, serde_yaml_ng::to_string(&config).expect("YAML")).expect("write");
    let out = Command::new(promtool)
        .args(["check", "config"])
        .arg(&file)
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Grafana reads the stack's Prometheus and the repository's dashboards
/// (deploy/grafana/, mounted whole).
#[test]
fn grafana_is_provisioned_with_prometheus_and_the_dashboards() {
    let compose = Compose::load();
    let (_, grafana) = compose.by_image("grafana/grafana");
    let dashboards_at = mount_point(grafana, DASHBOARDS_DIR);
    let provisioning = mounted_file(grafana, "/etc/grafana/provisioning");
    let yaml_in = |dir: &str| -> Vec<Value> {
        let dir = provisioning.join(dir);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| {
                serde_yaml_ng::from_str(&std::fs::read_to_string(p).expect("read")).expect("YAML")
            })
            .collect()
    };
    let paths: Vec<String> = yaml_in("dashboards")
        .iter()
        .flat_map(|f| f["providers"].as_sequence().cloned().unwrap_or_default())
        .filter_map(|p| p["options"]["path"].as_str().map(str::to_owned))
        .collect();
    assert!(
        paths.contains(&dashboards_at),
        "a dashboard provider reads {dashboards_at}: {paths:?}"
    );
    let urls: Vec<String> = yaml_in("datasources")
        .iter()
        .flat_map(|f| f["datasources"].as_sequence().cloned().unwrap_or_default())
        .filter(|d| d["type"].as_str() == Some("prometheus"))
        .filter_map(|d| d["url"].as_str().map(str::to_owned))
        .collect();
    let (prometheus, _) = compose.by_image("prom/prometheus");
    assert!(
        urls.iter()
            .any(|u| host_port(u) == (prometheus.to_owned(), Some(9090))),
        "a Prometheus data source at {prometheus}:9090: {urls:?}"
    );
}

/// nginx balances over exactly the API instances, on their TM_LISTEN port.
#[test]
fn nginx_balances_over_every_api_instance() {
    let compose = Compose::load();
    let (_, nginx) = compose.by_image("nginx");
    let conf = mounted_file(nginx, "/etc/nginx/conf.d/default.conf");
    let text = std::fs::read_to_string(&conf).expect("nginx's configuration");
    // The `server` lines of the `upstream` block (a `server` block has no such lines).
    let upstream: BTreeSet<String> = text
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("upstream "))
        .take_while(|l| *l != "}")
        .filter_map(|l| l.strip_prefix("server "))
        .filter_map(|l| l.split([' ', ';']).next().map(str::to_owned))
        .collect();
    let instances: BTreeSet<String> = compose
        .traffic_manager()
        .into_iter()
        .filter(|(_, s)| subcommand(s) == "serve")
        .map(|(name, s)| format!("{name}:{}", listen_port(&process_env(s))))
        .collect();
    assert_eq!(upstream, instances, "nginx's upstream servers");
}

/// What the stack publishes is reachable from this host only.
#[test]
fn compose_publishes_ports_on_loopback_only() {
    let compose = Compose::load();
    let mut published = 0;
    for (name, service) in compose.services() {
        for port in service
            .get("ports")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            published += 1;
            let host_ip = match port {
                Value::String(short) => short.rsplitn(3, ':').nth(2).unwrap_or("").to_owned(),
                Value::Mapping(long) => long
                    .get("host_ip")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                other => panic!("{name}: port {other:?}"),
            };
            assert!(
                ["127.0.0.1", "[::1]", "::1"].contains(&host_ip.as_str()),
                "{name} publishes {port:?} beyond loopback"
            );
        }
    }
    assert!(
        published >= 3,
        "the API, Prometheus and Grafana are published"
    );
}

/// Every variable compose.yaml requires is explained in its header comment, and none is
/// given a value in the file.
#[test]
fn compose_documents_every_required_variable() {
    let text = read("compose.yaml");
    let header: String = text
        .lines()
        .take_while(|l| l.starts_with('#') || l.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    let compose = Compose::load();
    assert!(
        compose.required.len() >= 4,
        "passwords and keys are required variables: {:?}",
        compose.required
    );
    for name in &compose.required {
        assert!(
            header.contains(&format!("{name}=")),
            "the header shows how to set {name}"
        );
        assert!(
            header.contains(&format!("#   {name} ")),
            "the header says what {name} is"
        );
    }
}

/// compose.yaml against the Compose Specification's JSON schema, as vendored by
/// check-jsonschema. The test command provides it through `TM_TEST_CHECK_JSONSCHEMA`;
/// elsewhere the check says it was not run.
#[test]
fn compose_follows_the_compose_specification() {
    let Ok(check) = std::env::var("TM_TEST_CHECK_JSONSCHEMA") else {
        eprintln!("TM_TEST_CHECK_JSONSCHEMA is not set: schema check not run");
        return;
    };
    let out = Command::new(check)
        .current_dir(repo())
        .args(["--builtin-schema", "vendor.compose-spec", "compose.yaml"])
        .output()
        .expect("check-jsonschema runs");
    assert!(
        out.status.success(),
        "check-jsonschema: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn expansion_follows_compose() {
    let vars = BTreeMap::from([("SET", "v"), ("EMPTY", "")]);
    let mut required = BTreeSet::new();
    let mut run = |s: &str| expand(s, &vars, &mut required);
    assert_eq!(run("a${SET}b$SET.$$x").unwrap(), "avbv.$x");
    assert_eq!(
        run("${UNSET:-d} ${EMPTY:-d} ${EMPTY-d} ${SET:-d}").unwrap(),
        "d d  v"
    );
    assert_eq!(run("${SET:+o}${UNSET:+o}${EMPTY+o}").unwrap(), "oo");
    assert_eq!(run("${SET:?why}").unwrap(), "v");
    assert!(run("${UNSET:?why}")
        .unwrap_err()
        .contains("UNSET is required"));
    assert!(run("${SET").is_err());
    assert!(run("${SET#x}").is_err());
    assert_eq!(
        required,
        BTreeSet::from(["SET".to_owned(), "UNSET".to_owned()])
    );
}
