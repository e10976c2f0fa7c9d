//! The Kubernetes manifests of deploy/kubernetes: each overlay rendered with kustomize,
//! validated against the Kubernetes schemas, and held to the rules that matter when it
//! runs — probes, resources, security context, secrets by reference, selectors that
//! select, settings the service has, and what each environment changes.
//!
//! Rendering needs kubectl (`TM_TEST_KUBECTL`); validation needs `kubernetes-validate`
//! (`TM_TEST_KUBERNETES_VALIDATE`) and, for the ServiceMonitor, whose schema Kubernetes
//! does not ship, `check-jsonschema` (`TM_TEST_CHECK_JSONSCHEMA`). The test command
//! provides all three; without one, the tests that need it say they were not run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_traffic-manager");
const OVERLAYS: [&str; 3] = ["dev", "staging", "prod"];
/// The Kubernetes version whose schemas the objects must pass (strictly: an unknown
/// field fails). The web pods' `preStop.sleep` needs 1.30 or later.
const KUBERNETES_VERSION: &str = "1.33";
/// Variables other than settings that a container may be given: the S3 client's.
const OTHER_VARIABLES: [&str; 4] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
];
/// The longest start-up the probes must allow: a million routes load in 7-14 s.
const START_UP_SECONDS: f64 = 14.0;

// ---- tools and rendering -------------------------------------------------------------

/// The path of an external tool, or `None` after saying what is not run without it.
fn tool(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(path) if !path.is_empty() => Some(path),
        _ => {
            eprintln!("{var} is not set: {what} not run");
            None
        }
    }
}

fn kubernetes_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes")
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

/// `kubectl kustomize` of `dir` (under deploy/kubernetes): the rendered text.
fn render_text(kubectl: &str, dir: &str) -> String {
    let out = run(Command::new(kubectl)
        .arg("kustomize")
        .arg(kubernetes_dir().join(dir)));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kustomize {dir} failed: {stderr}");
    // Deprecated fields still render, with a warning: the manifests use none.
    assert!(
        !stderr.to_lowercase().contains("warning"),
        "kustomize {dir} warned: {stderr}"
    );
    String::from_utf8(out.stdout).expect("kustomize prints UTF-8")
}

/// Every document of a YAML stream, as JSON values.
fn parse_yaml(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("rendered YAML parses"))
        .filter(|doc| !doc.is_null())
        .collect()
}

fn render(kubectl: &str, dir: &str) -> Vec<Value> {
    let objects = parse_yaml(&render_text(kubectl, dir));
    assert!(
        objects.len() > 10,
        "{dir} renders {} objects",
        objects.len()
    );
    objects
}

/// The names of the service's settings, as `TM_*` variables: the keys of its raw
/// configuration, which is what `TM_*` variables are read into.
fn settings() -> BTreeSet<String> {
    let raw = serde_json::to_value(tm_config::RawConfig::default()).expect("serializes");
    let keys: BTreeSet<String> = raw
        .as_object()
        .expect("a table of settings")
        .keys()
        .map(|key| format!("TM_{}", key.to_uppercase()))
        .collect();
    assert!(
        keys.contains("TM_DATABASE_URL") && keys.contains("TM_SHUTDOWN_GRACE"),
        "{keys:?}"
    );
    keys
}

// ---- reading objects -----------------------------------------------------------------

fn kind(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or_default()
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

fn what(object: &Value) -> String {
    format!("{}/{}", kind(object), name(object))
}

fn of_kind<'a>(objects: &'a [Value], wanted: &'a str) -> impl Iterator<Item = &'a Value> {
    objects.iter().filter(move |o| kind(o) == wanted)
}

fn find<'a>(objects: &'a [Value], wanted: &str, wanted_name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| kind(o) == wanted && name(o) == wanted_name)
}

/// The pod template of a workload (Deployment, Job, CronJob).
fn pod_template(object: &Value) -> Option<&Value> {
    match kind(object) {
        "Deployment" | "Job" => Some(&object["spec"]["template"]),
        "CronJob" => Some(&object["spec"]["jobTemplate"]["spec"]["template"]),
        _ => None,
    }
}

fn workloads(objects: &[Value]) -> impl Iterator<Item = (&Value, &Value)> {
    objects
        .iter()
        .filter_map(|o| pod_template(o).map(|template| (o, template)))
}

fn containers(template: &Value) -> impl Iterator<Item = &Value> {
    let spec = &template["spec"];
    array(&spec["initContainers"])
        .iter()
        .chain(array(&spec["containers"]))
}

fn array(value: &Value) -> &[Value] {
    value.as_array().map(Vec::as_slice).unwrap_or_default()
}

fn labels(template: &Value) -> BTreeMap<String, String> {
    string_map(&template["metadata"]["labels"])
}

fn string_map(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .map(|map| {
            map.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a LabelSelector (`matchLabels`, `matchExpressions`) selects `labels`. An
/// empty selector selects everything, as in Kubernetes.
fn selects(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    let by_label = string_map(&selector["matchLabels"])
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expression = array(&selector["matchExpressions"]).iter().all(|e| {
        let key = e["key"].as_str().unwrap_or_default();
        let values: Vec<&str> = array(&e["values"])
            .iter()
            .filter_map(Value::as_str)
            .collect();
        match e["operator"].as_str() {
            Some("In") => labels
                .get(key)
                .is_some_and(|v| values.contains(&v.as_str())),
            Some("NotIn") => labels
                .get(key)
                .is_none_or(|v| !values.contains(&v.as_str())),
            Some("Exists") => labels.contains_key(key),
            Some("DoesNotExist") => !labels.contains_key(key),
            _ => false,
        }
    });
    by_label && by_expression
}

/// The subcommand a container runs (`serve`, `worker`, `migrate`, `backup`).
fn subcommand(container: &Value) -> &str {
    array(&container["args"])
        .first()
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The Deployment whose container runs `command`.
fn deployment_running<'a>(objects: &'a [Value], command: &str) -> Option<&'a Value> {
    of_kind(objects, "Deployment")
        .find(|d| containers(&d["spec"]["template"]).any(|c| subcommand(c) == command))
}

// ---- values --------------------------------------------------------------------------

/// A CPU or memory quantity (`250m`, `1`, `128Mi`, `1Gi`) in cores or bytes.
fn quantity(value: &Value) -> Option<f64> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let units: [(&str, f64); 9] = [
        ("Ki", 1024.0),
        ("Mi", 1024.0 * 1024.0),
        ("Gi", 1024.0 * 1024.0 * 1024.0),
        ("Ti", 1024.0 * 1024.0 * 1024.0 * 1024.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("m", 1e-3),
    ];
    for (suffix, factor) in units {
        if let Some(number) = text.strip_suffix(suffix) {
            return number.parse::<f64>().ok().map(|n| n * factor);
        }
    }
    text.parse().ok()
}

/// A duration as the service writes it (`500ms`, `10s`, `1m`, `1h`), in seconds.
fn seconds(text: &str) -> Option<f64> {
    let units: [(&str, f64); 4] = [("ms", 1e-3), ("s", 1.0), ("m", 60.0), ("h", 3600.0)];
    units.iter().find_map(|(suffix, factor)| {
        text.strip_suffix(suffix)
            .and_then(|n| n.parse::<f64>().ok())
            .map(|n| n * factor)
    })
}

/// Whether a value carries credentials: `scheme://user:password@host`.
fn has_credentials(value: &str) -> bool {
    value.split("://").skip(1).any(|rest| {
        let authority = rest.split('/').next().unwrap_or_default();
        authority
            .rsplit_once('@')
            .is_some_and(|(user_info, _)| user_info.contains(':'))
    })
}

/// Whether a variable's name says it holds a secret: keys, passwords, tokens, and the
/// database and Redis URLs (which carry passwords). `*_FILE` settings name a file.
fn secret_like(variable: &str) -> bool {
    let v = variable.to_uppercase();
    if v.ends_with("_FILE") {
        return false;
    }
    v.ends_with("_KEY")
        || v.ends_with("_KEY_ID")
        || v.contains("SECRET")
        || v.contains("PASSWORD")
        || v.contains("TOKEN")
        || ((v.starts_with("TM_DATABASE") || v.starts_with("TM_REDIS"))
            && (v.ends_with("_URL") || v.ends_with("_URLS")))
}

// ---- a container's environment -------------------------------------------------------

/// Where a variable's value comes from.
#[derive(Clone, Debug, PartialEq)]
enum Source {
    /// Written in the manifest (`value`), or in a ConfigMap of the rendered output.
    Plain(String),
    /// A Secret's key, not in the repository.
    Secret { optional: bool },
    /// Something else (`fieldRef`, `resourceFieldRef`).
    Other,
}

/// A container's variables as Kubernetes sets them: `envFrom` first, then `env` over
/// them. A ConfigMap named but not rendered is a problem.
fn environment(
    container: &Value,
    objects: &[Value],
    problems: &mut Vec<String>,
) -> BTreeMap<String, Source> {
    let mut env = BTreeMap::new();
    let config_map = |name: &str, problems: &mut Vec<String>| {
        let found = find(objects, "ConfigMap", name);
        if found.is_none() {
            problems.push(format!("ConfigMap {name} is referenced but not rendered"));
        }
        found.map(|cm| string_map(&cm["data"])).unwrap_or_default()
    };
    for from in array(&container["envFrom"]) {
        if let Some(name) = from["configMapRef"]["name"].as_str() {
            for (key, value) in config_map(name, problems) {
                env.insert(key, Source::Plain(value));
            }
        }
    }
    for var in array(&container["env"]) {
        let var_name = var["name"].as_str().unwrap_or_default().to_owned();
        let from = &var["valueFrom"];
        let source = if let Some(value) = var["value"].as_str() {
            Source::Plain(value.to_owned())
        } else if from["secretKeyRef"].is_object() {
            Source::Secret {
                optional: from["secretKeyRef"]["optional"] == json!(true),
            }
        } else if let Some(name) = from["configMapKeyRef"]["name"].as_str() {
            let key = from["configMapKeyRef"]["key"].as_str().unwrap_or_default();
            match config_map(name, problems).remove(key) {
                Some(value) => Source::Plain(value),
                None => {
                    problems.push(format!("ConfigMap {name} has no key {key}"));
                    Source::Other
                }
            }
        } else {
            Source::Other
        };
        env.insert(var_name, source);
    }
    env
}

/// The value of a plain setting, or its default.
fn plain<'a>(env: &'a BTreeMap<String, Source>, variable: &str, default: &'a str) -> &'a str {
    match env.get(variable) {
        Some(Source::Plain(value)) => value,
        _ => default,
    }
}

// ---- the rules -----------------------------------------------------------------------

/// Everything wrong with a rendered set of objects, one line per problem.
fn problems(objects: &[Value], settings: &BTreeSet<String>) -> Vec<String> {
    let mut problems = Vec::new();
    check_probes(objects, &mut problems);
    for (workload, template) in workloads(objects) {
        check_pod_security(objects, workload, template, &mut problems);
        for container in containers(template) {
            let place = format!("{} container {}", what(workload), container["name"]);
            check_resources(&place, container, &mut problems);
            check_container_security(&place, template, container, &mut problems);
            check_image(&place, container, &mut problems);
            let env = environment(container, objects, &mut problems);
            check_environment(&place, &env, settings, &mut problems);
            check_data_dir(&place, template, container, &env, &mut problems);
        }
    }
    check_images_agree(objects, &mut problems);
    check_processes(objects, &mut problems);
    check_shutdown(objects, &mut problems);
    check_autoscaling(objects, &mut problems);
    check_service_selection(objects, &mut problems);
    check_service_monitor(objects, &mut problems);
    check_network_policies(objects, &mut problems);
    check_jobs(objects, &mut problems);
    problems
}

/// Every container of a Deployment has a startup, a liveness and a readiness probe on
/// the right paths, each on a port the container exposes, and the startup probe allows
/// a big store's start-up.
fn check_probes(objects: &[Value], problems: &mut Vec<String>) {
    for deployment in of_kind(objects, "Deployment") {
        for container in containers(&deployment["spec"]["template"]) {
            let place = format!("{} container {}", what(deployment), container["name"]);
            let ports = array(&container["ports"]);
            for (probe, path) in [
                ("startupProbe", "/health/live"),
                ("livenessProbe", "/health/live"),
                ("readinessProbe", "/health/ready"),
            ] {
                let get = &container[probe]["httpGet"];
                if !get.is_object() {
                    problems.push(format!("{place}: no {probe} with httpGet"));
                    continue;
                }
                if get["path"] != json!(path) {
                    problems.push(format!("{place}: {probe} on {}, not {path}", get["path"]));
                }
                let exposed = ports
                    .iter()
                    .any(|p| p["name"] == get["port"] || p["containerPort"] == get["port"]);
                if !exposed {
                    problems.push(format!(
                        "{place}: {probe} on port {}, which the container does not expose",
                        get["port"]
                    ));
                }
            }
            let startup = &container["startupProbe"];
            let number = |field: &str, default: f64| startup[field].as_f64().unwrap_or(default);
            let allowed = number("initialDelaySeconds", 0.0)
                + number("periodSeconds", 10.0) * number("failureThreshold", 3.0);
            if allowed < 3.0 * START_UP_SECONDS {
                problems.push(format!(
                    "{place}: the startup probe allows {allowed} s, less than three times \
                     a big store's start-up ({START_UP_SECONDS} s)"
                ));
            }
        }
    }
}

fn check_resources(place: &str, container: &Value, problems: &mut Vec<String>) {
    for resource in ["cpu", "memory"] {
        let request = quantity(&container["resources"]["requests"][resource]);
        let limit = quantity(&container["resources"]["limits"][resource]);
        match (request, limit) {
            (Some(request), Some(limit)) if request <= limit => {}
            (Some(_), Some(_)) => {
                problems.push(format!("{place}: {resource} request above its limit"))
            }
            _ => problems.push(format!(
                "{place}: {resource} needs both requests and limits"
            )),
        }
    }
}

/// The pod's own settings: no service account token, a seccomp profile, not root, no
/// host namespaces, and a service account that exists.
fn check_pod_security(
    objects: &[Value],
    workload: &Value,
    template: &Value,
    problems: &mut Vec<String>,
) {
    let spec = &template["spec"];
    let place = what(workload);
    let account = spec["serviceAccountName"].as_str().unwrap_or("default");
    match find(objects, "ServiceAccount", account) {
        Some(sa) if sa["automountServiceAccountToken"] == json!(false) => {}
        Some(_) if spec["automountServiceAccountToken"] == json!(false) => {}
        Some(_) => problems.push(format!("{place}: the service account token is mounted")),
        None => problems.push(format!(
            "{place}: service account {account} is not rendered"
        )),
    }
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        if spec[host] == json!(true) {
            problems.push(format!("{place}: {host}"));
        }
    }
    if spec["securityContext"]["runAsUser"] == json!(0) {
        problems.push(format!("{place}: runs as user 0"));
    }
}

/// Not root, no privilege escalation, a read-only root filesystem, no capabilities, the
/// runtime's seccomp profile (the container's or the pod's).
fn check_container_security(
    place: &str,
    template: &Value,
    container: &Value,
    problems: &mut Vec<String>,
) {
    let pod = &template["spec"]["securityContext"];
    let own = &container["securityContext"];
    let either = |field: &str| {
        if own[field].is_null() {
            &pod[field]
        } else {
            &own[field]
        }
    };
    if *either("runAsNonRoot") != json!(true) {
        problems.push(format!("{place}: runAsNonRoot is not true"));
    }
    if own["runAsUser"] == json!(0) {
        problems.push(format!("{place}: runs as user 0"));
    }
    if either("seccompProfile")["type"] != json!("RuntimeDefault") {
        problems.push(format!("{place}: seccomp profile is not RuntimeDefault"));
    }
    if own["allowPrivilegeEscalation"] != json!(false) {
        problems.push(format!("{place}: allowPrivilegeEscalation is not false"));
    }
    if own["privileged"] == json!(true) {
        problems.push(format!("{place}: privileged"));
    }
    if own["readOnlyRootFilesystem"] != json!(true) {
        problems.push(format!("{place}: the root filesystem is writable"));
    }
    if !array(&own["capabilities"]["drop"]).contains(&json!("ALL")) {
        problems.push(format!("{place}: capabilities do not drop ALL"));
    }
    if !array(&own["capabilities"]["add"]).is_empty() {
        problems.push(format!("{place}: adds capabilities"));
    }
}

/// The tag (or digest) of an image reference; empty without one.
fn image_tag(image: &str) -> &str {
    if let Some((_, digest)) = image.split_once('@') {
        return digest;
    }
    let last = image.rsplit('/').next().unwrap_or_default();
    last.split_once(':').map(|(_, tag)| tag).unwrap_or_default()
}

fn check_image(place: &str, container: &Value, problems: &mut Vec<String>) {
    let image = container["image"].as_str().unwrap_or_default();
    let tag = image_tag(image);
    if tag.is_empty() || tag == "latest" {
        problems.push(format!(
            "{place}: image {image:?} is not pinned (no tag, or latest)"
        ));
    }
    if !image.starts_with("ghcr.io/") || !image.contains("/traffic-manager") {
        problems.push(format!("{place}: image {image:?} is not the service's"));
    }
}

/// One release at a time: every container of the set runs the same image.
fn check_images_agree(objects: &[Value], problems: &mut Vec<String>) {
    let images: BTreeSet<&str> = workloads(objects)
        .flat_map(|(_, template)| containers(template))
        .filter_map(|c| c["image"].as_str())
        .collect();
    if images.len() != 1 {
        problems.push(format!("the containers run different images: {images:?}"));
    }
}

/// Every `TM_*` variable is a setting of the service; secrets come from Secrets only.
fn check_environment(
    place: &str,
    env: &BTreeMap<String, Source>,
    settings: &BTreeSet<String>,
    problems: &mut Vec<String>,
) {
    for (variable, source) in env {
        let known = settings.contains(variable) || OTHER_VARIABLES.contains(&variable.as_str());
        if !known {
            problems.push(format!(
                "{place}: {variable} is not a setting of the service"
            ));
        }
        if let Source::Plain(value) = source {
            if secret_like(variable) {
                problems.push(format!(
                    "{place}: {variable} is a secret but is written in the manifests, \
                     not taken from a Secret"
                ));
            }
            if has_credentials(value) {
                problems.push(format!("{place}: {variable} holds credentials"));
            }
        }
    }
}

/// With a read-only root filesystem, TM_DATA_DIR must be a mounted volume.
fn check_data_dir(
    place: &str,
    template: &Value,
    container: &Value,
    env: &BTreeMap<String, Source>,
    problems: &mut Vec<String>,
) {
    let data_dir = plain(env, "TM_DATA_DIR", "./data");
    let mount = array(&container["volumeMounts"])
        .iter()
        .find(|m| m["mountPath"] == json!(data_dir));
    let volume = mount.and_then(|m| {
        array(&template["spec"]["volumes"])
            .iter()
            .find(|v| v["name"] == m["name"])
    });
    let writable = volume
        .is_some_and(|v| v["emptyDir"].is_object() || v["persistentVolumeClaim"].is_object())
        && mount.is_some_and(|m| m["readOnly"] != json!(true));
    if !writable {
        problems.push(format!(
            "{place}: TM_DATA_DIR {data_dir} is not a writable volume"
        ));
    }
}

/// The web pods run `serve` without jobs, the workers `worker`; both listen on
/// 0.0.0.0:8080, the port they expose.
fn check_processes(objects: &[Value], problems: &mut Vec<String>) {
    for command in ["serve", "worker"] {
        let Some(deployment) = deployment_running(objects, command) else {
            problems.push(format!("no Deployment runs `{command}`"));
            continue;
        };
        for container in containers(&deployment["spec"]["template"]) {
            let env = environment(container, objects, problems);
            let place = format!("{} container {}", what(deployment), container["name"]);
            let listen = plain(&env, "TM_LISTEN", "127.0.0.1:8080");
            let port: Option<u64> = listen.rsplit_once(':').and_then(|(_, p)| p.parse().ok());
            if !listen.starts_with("0.0.0.0:") {
                problems.push(format!(
                    "{place}: TM_LISTEN {listen} is not reachable from outside the pod"
                ));
            }
            if !array(&container["ports"])
                .iter()
                .any(|p| p["containerPort"].as_u64() == port)
            {
                problems.push(format!(
                    "{place}: TM_LISTEN {listen} is not an exposed port"
                ));
            }
            if command == "serve" && plain(&env, "TM_JOBS_IN_SERVE", "true") != "false" {
                problems.push(format!("{place}: serve runs jobs (TM_JOBS_IN_SERVE)"));
            }
            // Given, not made: a pod that made its own would print an admin key to its
            // log, and each pod would seal webhook secrets under a key of its own.
            for variable in [
                "TM_DATABASE_URL",
                "TM_SECRETS_KEY",
                "TM_BOOTSTRAP_ADMIN_KEY",
            ] {
                if !matches!(env.get(variable), Some(Source::Secret { optional: false })) {
                    problems.push(format!("{place}: {variable} is not taken from a Secret"));
                }
            }
        }
    }
}

/// SIGKILL comes after the shutdown the process is configured for: the web pods' preStop
/// pause, then TM_SHUTDOWN_GRACE for requests in flight; the workers' grace, then a
/// third of TM_JOB_LEASE for jobs under way. Five seconds more for closing the pools.
fn check_shutdown(objects: &[Value], problems: &mut Vec<String>) {
    for command in ["serve", "worker"] {
        let Some(deployment) = deployment_running(objects, command) else {
            continue;
        };
        let spec = &deployment["spec"]["template"]["spec"];
        let granted = spec["terminationGracePeriodSeconds"]
            .as_f64()
            .unwrap_or(30.0);
        for container in containers(&deployment["spec"]["template"]) {
            let env = environment(container, objects, problems);
            let grace = seconds(plain(&env, "TM_SHUTDOWN_GRACE", "10s")).unwrap_or(f64::MAX);
            let pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
                .as_f64()
                .unwrap_or(0.0);
            let jobs = if command == "worker" {
                seconds(plain(&env, "TM_JOB_LEASE", "30s")).unwrap_or(f64::MAX) / 3.0
            } else {
                0.0
            };
            let needed = pause + grace + jobs + 5.0;
            if granted < needed {
                problems.push(format!(
                    "{}: terminationGracePeriodSeconds {granted} is shorter than the \
                     {needed} s the process may take to stop",
                    what(deployment)
                ));
            }
        }
    }
}

/// Each HPA scales a rendered Deployment (which then leaves its replicas to it) on CPU
/// and requests per second; each PDB covers the pods of a Deployment.
fn check_autoscaling(objects: &[Value], problems: &mut Vec<String>) {
    let hpas: Vec<&Value> = of_kind(objects, "HorizontalPodAutoscaler").collect();
    for hpa in &hpas {
        let target = &hpa["spec"]["scaleTargetRef"];
        let target_name = target["name"].as_str().unwrap_or_default();
        match find(objects, "Deployment", target_name) {
            Some(d)
                if target["kind"] == json!("Deployment")
                    && target["apiVersion"] == json!("apps/v1") =>
            {
                if !d["spec"]["replicas"].is_null() {
                    problems.push(format!(
                        "{}: sets replicas, which {} owns",
                        what(d),
                        what(hpa)
                    ));
                }
            }
            _ => problems.push(format!(
                "{}: targets no rendered Deployment ({target})",
                what(hpa)
            )),
        }
        let (min, max) = (
            hpa["spec"]["minReplicas"].as_u64(),
            hpa["spec"]["maxReplicas"].as_u64(),
        );
        if !matches!((min, max), (Some(min), Some(max)) if 1 <= min && min <= max) {
            problems.push(format!("{}: replicas {min:?} to {max:?}", what(hpa)));
        }
        let metrics = array(&hpa["spec"]["metrics"]);
        let cpu = metrics
            .iter()
            .any(|m| m["resource"]["name"] == json!("cpu"));
        let rps = metrics.iter().any(|m| {
            m["type"] == json!("Pods")
                && m["pods"]["metric"]["name"] == json!("http_requests_per_second")
        });
        if !cpu || !rps {
            problems.push(format!(
                "{}: scales on neither CPU nor requests per second",
                what(hpa)
            ));
        }
    }
    if deployment_running(objects, "serve").is_some_and(|web| {
        !hpas
            .iter()
            .any(|h| h["spec"]["scaleTargetRef"]["name"] == web["metadata"]["name"])
    }) {
        problems.push("no HorizontalPodAutoscaler scales the web Deployment".to_owned());
    }
    let pdbs: Vec<&Value> = of_kind(objects, "PodDisruptionBudget").collect();
    for pdb in &pdbs {
        let covers = of_kind(objects, "Deployment")
            .any(|d| selects(&pdb["spec"]["selector"], &labels(&d["spec"]["template"])));
        if !covers {
            problems.push(format!("{}: selects the pods of no Deployment", what(pdb)));
        }
    }
    if let Some(web) = deployment_running(objects, "serve") {
        let web_labels = labels(&web["spec"]["template"]);
        if !pdbs
            .iter()
            .any(|p| selects(&p["spec"]["selector"], &web_labels))
        {
            problems.push("no PodDisruptionBudget covers the web pods".to_owned());
        }
    }
}

/// Whether some container of a pod template exposes `port` (a name or a number).
fn exposes(template: &Value, port: &Value) -> bool {
    containers(template).any(|c| {
        array(&c["ports"])
            .iter()
            .any(|p| p["name"] == *port || p["containerPort"] == *port)
    })
}

/// Each Service selects the pods of one kind of Deployment, on ports they expose; one
/// Service sends clients to the web pods.
fn check_service_selection(objects: &[Value], problems: &mut Vec<String>) {
    for service in of_kind(objects, "Service") {
        let selector = json!({ "matchLabels": service["spec"]["selector"] });
        let selected: Vec<&Value> = of_kind(objects, "Deployment")
            .filter(|d| selects(&selector, &labels(&d["spec"]["template"])))
            .collect();
        if service["spec"]["selector"]
            .as_object()
            .is_none_or(|s| s.is_empty())
            || selected.len() != 1
        {
            problems.push(format!(
                "{}: selects the pods of {} Deployments, not one",
                what(service),
                selected.len()
            ));
        }
        for port in array(&service["spec"]["ports"]) {
            let target = if port["targetPort"].is_null() {
                &port["port"]
            } else {
                &port["targetPort"]
            };
            for deployment in &selected {
                if !exposes(&deployment["spec"]["template"], target) {
                    problems.push(format!(
                        "{}: port {target} is not exposed by {}",
                        what(service),
                        what(deployment)
                    ));
                }
            }
        }
    }
    if let Some(web) = deployment_running(objects, "serve") {
        let web_labels = labels(&web["spec"]["template"]);
        let served = of_kind(objects, "Service").any(|s| {
            s["spec"]["clusterIP"] != json!("None")
                && selects(
                    &json!({ "matchLabels": s["spec"]["selector"] }),
                    &web_labels,
                )
        });
        if !served {
            problems.push("no Service sends clients to the web pods".to_owned());
        }
    }
}

/// The ServiceMonitor selects the Services of the web and worker pods, by a port name
/// each of them has, on /metrics.
fn check_service_monitor(objects: &[Value], problems: &mut Vec<String>) {
    let monitors: Vec<&Value> = of_kind(objects, "ServiceMonitor").collect();
    if monitors.is_empty() {
        problems.push("no ServiceMonitor".to_owned());
    }
    let mut scraped: BTreeSet<String> = BTreeSet::new();
    for monitor in monitors {
        let selected: Vec<&Value> = of_kind(objects, "Service")
            .filter(|s| {
                selects(
                    &monitor["spec"]["selector"],
                    &string_map(&s["metadata"]["labels"]),
                )
            })
            .collect();
        if selected.is_empty() {
            problems.push(format!("{}: selects no Service", what(monitor)));
        }
        for endpoint in array(&monitor["spec"]["endpoints"]) {
            if endpoint["path"] != json!("/metrics") {
                problems.push(format!(
                    "{}: scrapes {}, not /metrics",
                    what(monitor),
                    endpoint["path"]
                ));
            }
            for service in &selected {
                let named = array(&service["spec"]["ports"])
                    .iter()
                    .any(|p| p["name"] == endpoint["port"]);
                if named {
                    scraped.insert(name(service).to_owned());
                } else {
                    problems.push(format!(
                        "{}: port {} is not a named port of {}",
                        what(monitor),
                        endpoint["port"],
                        what(service)
                    ));
                }
            }
        }
    }
    for command in ["serve", "worker"] {
        let Some(deployment) = deployment_running(objects, command) else {
            continue;
        };
        let pod_labels = labels(&deployment["spec"]["template"]);
        let covered = of_kind(objects, "Service").any(|s| {
            scraped.contains(name(s))
                && selects(
                    &json!({ "matchLabels": s["spec"]["selector"] }),
                    &pod_labels,
                )
        });
        if !covered {
            problems.push(format!(
                "the metrics of {} are not scraped",
                what(deployment)
            ));
        }
    }
}

/// Whether a NetworkPolicy of `policy_type` selects pods with `pod_labels`.
fn isolating<'a>(
    objects: &'a [Value],
    pod_labels: &'a BTreeMap<String, String>,
    policy_type: &'a str,
) -> impl Iterator<Item = &'a Value> {
    of_kind(objects, "NetworkPolicy").filter(move |p| {
        array(&p["spec"]["policyTypes"]).contains(&json!(policy_type))
            && selects(&p["spec"]["podSelector"], pod_labels)
    })
}

/// Every pod is isolated both ways; the web pods accept their port, and every pod may
/// reach DNS and PostgreSQL.
fn check_network_policies(objects: &[Value], problems: &mut Vec<String>) {
    for (workload, template) in workloads(objects) {
        let pod_labels = labels(template);
        for policy_type in ["Ingress", "Egress"] {
            if isolating(objects, &pod_labels, policy_type)
                .next()
                .is_none()
            {
                problems.push(format!(
                    "{}: no NetworkPolicy limits its {policy_type}",
                    what(workload)
                ));
            }
        }
        let egress_ports: Vec<&Value> = isolating(objects, &pod_labels, "Egress")
            .flat_map(|p| array(&p["spec"]["egress"]))
            .flat_map(|rule| array(&rule["ports"]))
            .map(|port| &port["port"])
            .collect();
        for (port, what_for) in [(53, "DNS"), (5432, "PostgreSQL")] {
            if !egress_ports.contains(&&json!(port)) {
                problems.push(format!("{}: may not reach {what_for}", what(workload)));
            }
        }
    }
    if let Some(web) = deployment_running(objects, "serve") {
        let pod_labels = labels(&web["spec"]["template"]);
        let http = json!("http");
        let open = isolating(objects, &pod_labels, "Ingress")
            .flat_map(|p| array(&p["spec"]["ingress"]))
            .any(|rule| {
                array(&rule["ports"])
                    .iter()
                    .any(|p| p["port"] == http || p["port"] == json!(8080))
            });
        if !open {
            problems.push("no NetworkPolicy lets requests reach the web pods".to_owned());
        }
    }
}

/// A Job applies the migrations; a CronJob makes the daily backup, never two at once,
/// with the bucket's credentials from a Secret.
fn check_jobs(objects: &[Value], problems: &mut Vec<String>) {
    let migrates = of_kind(objects, "Job")
        .any(|j| containers(&j["spec"]["template"]).any(|c| subcommand(c) == "migrate"));
    if !migrates {
        problems.push("no Job runs `migrate`".to_owned());
    }
    let backups: Vec<&Value> = of_kind(objects, "CronJob")
        .filter(|j| {
            containers(pod_template(j).unwrap_or(&Value::Null)).any(|c| subcommand(c) == "backup")
        })
        .collect();
    if backups.len() != 1 {
        problems.push(format!("{} CronJobs run `backup`, not one", backups.len()));
    }
    for cron in backups {
        let spec = &cron["spec"];
        if spec["concurrencyPolicy"] != json!("Forbid") {
            problems.push(format!("{}: concurrencyPolicy is not Forbid", what(cron)));
        }
        let fields: Vec<&str> = spec["schedule"]
            .as_str()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        let daily = fields.len() == 5
            && fields[..2].iter().all(|f| f.parse::<u32>().is_ok())
            && fields[2..].iter().all(|f| *f == "*");
        if !daily {
            problems.push(format!(
                "{}: schedule {} is not once a day",
                what(cron),
                spec["schedule"]
            ));
        }
        for container in containers(pod_template(cron).unwrap_or(&Value::Null)) {
            let env = environment(container, objects, problems);
            for variable in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
                if !matches!(env.get(variable), Some(Source::Secret { optional: false })) {
                    problems.push(format!(
                        "{}: {variable} is not taken from a Secret",
                        what(cron)
                    ));
                }
            }
            if !matches!(env.get("TM_BACKUP_TARGET"), Some(Source::Plain(t)) if !t.is_empty()) {
                problems.push(format!("{}: no TM_BACKUP_TARGET", what(cron)));
            }
        }
    }
}

/// Every object is in the overlay's namespace, which enforces the restricted Pod
/// Security Standard.
fn check_namespace(objects: &[Value], namespace: &str, problems: &mut Vec<String>) {
    match find(objects, "Namespace", namespace) {
        Some(ns)
            if ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
                == json!("restricted") => {}
        Some(ns) => problems.push(format!(
            "{}: does not enforce the restricted pod security",
            what(ns)
        )),
        None => problems.push(format!("Namespace {namespace} is not rendered")),
    }
    for object in objects.iter().filter(|o| kind(o) != "Namespace") {
        if object["metadata"]["namespace"] != json!(namespace) {
            problems.push(format!("{}: not in namespace {namespace}", what(object)));
        }
    }
}

// ---- the tests -----------------------------------------------------------------------

#[test]
fn helpers_read_manifests_as_kubernetes_does() {
    assert_eq!(quantity(&json!("250m")), Some(0.25));
    assert_eq!(quantity(&json!("1")), Some(1.0));
    assert_eq!(quantity(&json!(2)), Some(2.0));
    assert_eq!(quantity(&json!("128Mi")), Some(128.0 * 1024.0 * 1024.0));
    assert_eq!(quantity(&json!("1Gi")), quantity(&json!("1024Mi")));
    assert_eq!(quantity(&json!("lots")), None);
    assert_eq!(seconds("10s"), Some(10.0));
    assert_eq!(seconds("500ms"), Some(0.5));
    assert_eq!(seconds("5m"), Some(300.0));
    let pod: BTreeMap<String, String> = [("app", "tm"), ("tier", "web")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert!(selects(&json!({"matchLabels": {"app": "tm"}}), &pod));
    assert!(!selects(
        &json!({"matchLabels": {"app": "tm", "tier": "worker"}}),
        &pod
    ));
    assert!(selects(
        &json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web", "worker"]}]}),
        &pod
    ));
    assert!(!selects(
        &json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["web"]}]}),
        &pod
    ));
    assert!(!selects(
        &json!({"matchExpressions": [{"key": "zone", "operator": "Exists"}]}),
        &pod
    ));
    assert!(has_credentials("postgres://tm:hunter2@db:5432/tm"));
    assert!(!has_credentials("postgres://db:5432/tm"));
    assert!(!has_credentials("s3://bucket/prefix"));
    for secret in [
        "TM_DATABASE_URL",
        "TM_DATABASE_REPLICA_URLS",
        "TM_REDIS_URL",
        "TM_SECRETS_KEY",
        "TM_BOOTSTRAP_ADMIN_KEY",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
    ] {
        assert!(secret_like(secret), "{secret}");
    }
    for setting in [
        "TM_SECRETS_KEY_FILE",
        "TM_LISTEN",
        "TM_RATE_LIMIT_KEYS",
        "AWS_REGION",
        "AWS_ENDPOINT_URL",
        "TM_BACKUP_TARGET",
    ] {
        assert!(!secret_like(setting), "{setting}");
    }
    assert_eq!(image_tag("ghcr.io/org/traffic-manager:0.1.0"), "0.1.0");
    assert_eq!(image_tag("ghcr.io/org/traffic-manager"), "");
    assert_eq!(image_tag("registry:5000/traffic-manager"), "");
    assert_eq!(
        image_tag("ghcr.io/org/traffic-manager@sha256:abc"),
        "sha256:abc"
    );
}

/// Each overlay renders, and what it renders keeps every rule.
#[test]
fn every_overlay_renders_and_keeps_the_rules() {
    let Some(kubectl) = tool("TM_TEST_KUBECTL", "rendering the Kubernetes manifests") else {
        return;
    };
    let settings = settings();
    for overlay in OVERLAYS {
        let objects = render(&kubectl, &format!("overlays/{overlay}"));
        let mut found = problems(&objects, &settings);
        check_namespace(&objects, &format!("traffic-manager-{overlay}"), &mut found);
        assert!(found.is_empty(), "overlay {overlay}:\n{}", found.join("\n"));
    }
    let base = render(&kubectl, "base");
    let found = problems(&base, &settings);
    assert!(found.is_empty(), "base:\n{}", found.join("\n"));
}

/// `objects` with the first object of `kind` named `object_name` changed by `change`.
fn broken(
    objects: &[Value],
    kind_: &str,
    object_name: &str,
    change: impl FnOnce(&mut Value),
) -> Vec<Value> {
    let mut objects = objects.to_vec();
    let object = objects
        .iter_mut()
        .find(|o| kind(o) == kind_ && name(o) == object_name)
        .unwrap_or_else(|| panic!("{kind_}/{object_name} is rendered"));
    change(object);
    objects
}

/// The prod render with one mistake each, and a piece of the problem each must raise.
#[expect(clippy::too_many_lines, reason = "a table: one mistake a row")]
fn mistakes(prod: &[Value]) -> Vec<(&'static str, Vec<Value>)> {
    let prod = prod.to_vec();
    let web = "traffic-manager-web";
    let web_container = |f: fn(&mut Value)| {
        move |d: &mut Value| f(&mut d["spec"]["template"]["spec"]["containers"][0])
    };
    let cases: Vec<(&'static str, Vec<Value>)> = vec![
        (
            "no readinessProbe",
            broken(
                &prod,
                "Deployment",
                web,
                web_container(|c| c["readinessProbe"] = Value::Null),
            ),
        ),
        (
            "livenessProbe on \"/healthz\"",
            broken(
                &prod,
                "Deployment",
                web,
                web_container(|c| c["livenessProbe"]["httpGet"]["path"] = json!("/healthz")),
            ),
        ),
        (
            "does not expose",
            broken(
                &prod,
                "Deployment",
                web,
                web_container(|c| c["startupProbe"]["httpGet"]["port"] = json!("metrics")),
            ),
        ),
        (
            "the startup probe allows",
            broken(
                &prod,
                "Deployment",
                web,
                web_container(|c| c["startupProbe"]["failureThreshold"] = json!(3)),
            ),
        ),
        (
            "cpu needs both",
            broken(
                &prod,
                "Deployment",
                web,
                web_container(|c| c["resources"]["limits"] = json!({"memory": "1Gi"})),
            ),
        ),
        (
            "not pinned",
            broken(
                &prod,
                "Deployment",
                web,
                web_container(|c| c["image"] = json!("ghcr.io/example-org/traffic-manager:latest")),
            ),
        ),
        (
            "runAsNonRoot is not true",
            broken(&prod, "Deployment", web, |d| {
                d["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] = json!(false);
                d["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsNonRoot"] =
                    Value::Null;
            }),
        ),
        (
            "root filesystem is writable",
            broken(
                &prod,
                "Deployment",
                web,
                web_container(|c| c["securityContext"]["readOnlyRootFilesystem"] = json!(false)),
            ),
        ),
        (
            "TM_DATABASE_URL is a secret but is written",
            broken(
                &prod,
                "Deployment",
                web,
                web_container(|c| {
                    c["env"][2] = json!({"name": "TM_DATABASE_URL", "value": "postgres://db/tm"})
                }),
            ),
        ),
        (
            "holds credentials",
            broken(
                &prod,
                "Deployment",
                web,
                web_container(|c| {
                    c["env"][0] = json!({"name": "TM_PROCESS_TYPE", "value": "http://u:p@host"})
                }),
            ),
        ),
        (
            "TM_LISTN is not a setting",
            broken(
                &prod,
                "Deployment",
                web,
                web_container(|c| {
                    c["env"][0] = json!({"name": "TM_LISTN", "value": "0.0.0.0:8080"})
                }),
            ),
        ),
        (
            "serve runs jobs",
            broken(
                &prod,
                "Deployment",
                web,
                web_container(|c| c["env"][1]["value"] = json!("true")),
            ),
        ),
        (
            "terminationGracePeriodSeconds",
            broken(&prod, "Deployment", web, |d| {
                d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = json!(10)
            }),
        ),
        (
            "sets replicas",
            broken(&prod, "Deployment", web, |d| {
                d["spec"]["replicas"] = json!(4)
            }),
        ),
        (
            "targets no rendered Deployment",
            broken(&prod, "HorizontalPodAutoscaler", web, |h| {
                h["spec"]["scaleTargetRef"]["name"] = json!("traffic-manager")
            }),
        ),
        (
            "selects the pods of no Deployment",
            broken(&prod, "PodDisruptionBudget", web, |p| {
                p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] = json!("api")
            }),
        ),
        (
            "selects the pods of 2 Deployments",
            broken(&prod, "Service", "traffic-manager", |s| {
                s["spec"]["selector"] = json!({"app.kubernetes.io/name": "traffic-manager"})
            }),
        ),
        (
            "is not exposed by",
            broken(&prod, "Service", "traffic-manager", |s| {
                s["spec"]["ports"][0]["targetPort"] = json!(9090)
            }),
        ),
        (
            "is not a named port",
            broken(&prod, "ServiceMonitor", "traffic-manager", |m| {
                m["spec"]["endpoints"][0]["port"] = json!("metrics")
            }),
        ),
        (
            "selects no Service",
            broken(&prod, "ServiceMonitor", "traffic-manager", |m| {
                m["spec"]["selector"]["matchLabels"] = json!({"app": "tm"})
            }),
        ),
        (
            "no NetworkPolicy limits its Egress",
            broken(&prod, "NetworkPolicy", "traffic-manager-egress", |p| {
                p["spec"]["policyTypes"] = json!(["Ingress"])
            }),
        ),
        (
            "concurrencyPolicy is not Forbid",
            broken(&prod, "CronJob", "traffic-manager-backup", |j| {
                j["spec"]["concurrencyPolicy"] = json!("Allow")
            }),
        ),
        (
            "service account token is mounted",
            broken(
                &broken(&prod, "ServiceAccount", "traffic-manager", |a| {
                    a["automountServiceAccountToken"] = json!(true)
                }),
                "Deployment",
                web,
                |d| d["spec"]["template"]["spec"]["automountServiceAccountToken"] = Value::Null,
            ),
        ),
    ];
    cases
}

/// The rules are not vacuous: each kind of mistake in the prod render is found.
#[test]
fn the_rules_find_each_kind_of_mistake() {
    let Some(kubectl) = tool("TM_TEST_KUBECTL", "rendering the Kubernetes manifests") else {
        return;
    };
    let settings = settings();
    let prod = render(&kubectl, "overlays/prod");
    assert_eq!(problems(&prod, &settings), Vec::<String>::new());
    for (expected, objects) in mistakes(&prod) {
        let found = problems(&objects, &settings);
        assert!(
            found.iter().any(|p| p.contains(expected)),
            "a mistake was not found ({expected}); found:\n{}",
            found.join("\n")
        );
    }
}

/// `kubernetes-validate --strict` of a YAML stream: its exit status and its lines.
fn validate(validator: &str, objects_yaml: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("rendered.yaml");
    std::fs::write(&file, objects_yaml).expect("write the rendered objects");
    let out = run(Command::new(validator)
        .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
        .arg(&file));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Every object of every overlay passes the schemas of Kubernetes 1.33, unknown fields
/// refused. The ServiceMonitor, which Kubernetes has no schema for, is the only object
/// not checked here (see the next test).
#[test]
fn rendered_objects_pass_the_kubernetes_schemas() {
    let Some(kubectl) = tool("TM_TEST_KUBECTL", "rendering the Kubernetes manifests") else {
        return;
    };
    let Some(validator) = tool(
        "TM_TEST_KUBERNETES_VALIDATE",
        "kubernetes-validate of the manifests",
    ) else {
        return;
    };
    for dir in ["base", "overlays/dev", "overlays/staging", "overlays/prod"] {
        let text = render_text(&kubectl, dir);
        let objects = parse_yaml(&text);
        let (ok, report) = validate(&validator, &text);
        assert!(
            ok,
            "{dir} fails the Kubernetes {KUBERNETES_VERSION} schemas:\n{report}"
        );
        for object in &objects {
            let line = format!("resource {}/{} ", kind(object).to_lowercase(), name(object));
            let passed = report
                .lines()
                .any(|l| l.starts_with("INFO") && l.contains(&line) && l.contains("passed"));
            if kind(object) == "ServiceMonitor" {
                assert!(
                    !passed,
                    "{dir}: a ServiceMonitor schema appeared:\n{report}"
                );
            } else {
                assert!(
                    passed,
                    "{dir}: {} was not validated:\n{report}",
                    what(object)
                );
            }
        }
        let warnings: Vec<&str> = report
            .lines()
            .filter(|l| l.starts_with("WARN") && !l.contains("kind ServiceMonitor "))
            .collect();
        assert!(warnings.is_empty(), "{dir}: {warnings:?}");
    }
    // The same check refuses a misspelt field: strict validation is in force.
    let prod = render(&kubectl, "overlays/prod");
    let misspelt = broken(&prod, "Deployment", "traffic-manager-web", |d| {
        d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSecond"] = json!(5);
    });
    let yaml: Vec<String> = misspelt
        .iter()
        .map(|o| serde_yaml_ng::to_string(o).expect("serializes"))
        .collect();
    let (ok, report) = validate(&validator, &yaml.join("---\n"));
    assert!(!ok && report.contains("periodSecond"), "{report}");
}

/// The ServiceMonitor passes a schema of the fields the manifests use
/// (tests/manifests/servicemonitor.schema.json), any other field refused.
#[test]
fn service_monitors_pass_their_schema() {
    let Some(kubectl) = tool("TM_TEST_KUBECTL", "rendering the Kubernetes manifests") else {
        return;
    };
    let Some(checker) = tool(
        "TM_TEST_CHECK_JSONSCHEMA",
        "check-jsonschema of the ServiceMonitor",
    ) else {
        return;
    };
    let schema =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/manifests/servicemonitor.schema.json");
    let dir = tempfile::tempdir().expect("tempdir");
    let check = |monitor: &Value, file: &str| {
        let path = dir.path().join(file);
        std::fs::write(&path, monitor.to_string()).expect("write");
        let out = run(Command::new(&checker)
            .arg("--schemafile")
            .arg(&schema)
            .arg(&path));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    for overlay in OVERLAYS {
        let objects = render(&kubectl, &format!("overlays/{overlay}"));
        let monitors: Vec<&Value> = of_kind(&objects, "ServiceMonitor").collect();
        assert!(!monitors.is_empty(), "{overlay} has no ServiceMonitor");
        for monitor in monitors {
            let (ok, report) = check(monitor, &format!("{overlay}.json"));
            assert!(ok, "{overlay}: {}:\n{report}", what(monitor));
            let mut misspelt = monitor.clone();
            misspelt["spec"]["endpoints"][0]["paht"] = json!("/metrics");
            let (ok, report) = check(&misspelt, "misspelt.json");
            assert!(!ok && report.contains("paht"), "{report}");
            let mut bad_interval = monitor.clone();
            bad_interval["spec"]["endpoints"][0]["interval"] = json!("15 seconds");
            assert!(
                !check(&bad_interval, "interval.json").0,
                "an interval of \"15 seconds\" passed"
            );
        }
    }
}

/// What an environment decides, read from its render.
#[derive(Debug)]
struct Shape {
    hpa: (u64, u64),
    workers: u64,
    pdb: Value,
    web_memory: (f64, f64),
    /// The web container's settings.
    env: BTreeMap<String, Source>,
}

fn shape(objects: &[Value]) -> Shape {
    let web = deployment_running(objects, "serve").expect("a web Deployment");
    let worker = deployment_running(objects, "worker").expect("a worker Deployment");
    let hpa = of_kind(objects, "HorizontalPodAutoscaler")
        .next()
        .expect("an HPA");
    let pdb = of_kind(objects, "PodDisruptionBudget")
        .next()
        .expect("a PDB");
    let container = &web["spec"]["template"]["spec"]["containers"][0];
    let memory = |which: &str| quantity(&container["resources"][which]["memory"]).unwrap_or(0.0);
    Shape {
        hpa: (
            hpa["spec"]["minReplicas"].as_u64().unwrap_or(1),
            hpa["spec"]["maxReplicas"].as_u64().unwrap_or(0),
        ),
        workers: worker["spec"]["replicas"].as_u64().unwrap_or(1),
        pdb: pdb["spec"].clone(),
        web_memory: (memory("requests"), memory("limits")),
        env: environment(container, objects, &mut Vec::new()),
    }
}

/// Pods a budget lets go at once out of `pods`, as the disruption controller counts
/// (percentages rounded up).
fn disruptions_allowed(budget: &Value, pods: u64) -> u64 {
    let scaled = |value: &Value| match value {
        Value::String(percent) => {
            let p: u64 = percent.trim_end_matches('%').parse().expect("a percentage");
            (p * pods).div_ceil(100)
        }
        other => other.as_u64().expect("a count"),
    };
    if !budget["maxUnavailable"].is_null() {
        scaled(&budget["maxUnavailable"]).min(pods)
    } else if !budget["minAvailable"].is_null() {
        pods.saturating_sub(scaled(&budget["minAvailable"]))
    } else {
        pods
    }
}

/// The connections a fleet at full scale opens on the primary (README "Connection budget").
fn primary_connections(shape: &Shape) -> u64 {
    let number = |variable: &str, default: &str| -> u64 {
        plain(&shape.env, variable, default)
            .parse()
            .expect("a number")
    };
    let critical = number("TM_DB_CRITICAL_POOL", "2");
    shape.hpa.1 * (number("TM_DB_POOL_MAX_WEB", "10") + critical + 1)
        + shape.workers * (number("TM_DB_POOL_MAX_WORKER", "10") + critical + 1)
}

/// Each overlay changes what its environment needs: its namespace and profile, its
/// scale, its pools; prod runs more pods, lets fewer go at once, and has the memory for
/// a million routes.
#[test]
fn each_overlay_changes_what_its_environment_needs() {
    let Some(kubectl) = tool("TM_TEST_KUBECTL", "rendering the Kubernetes manifests") else {
        return;
    };
    let base = shape(&render(&kubectl, "base"));
    for overlay in OVERLAYS {
        let env = shape(&render(&kubectl, &format!("overlays/{overlay}")));
        assert_eq!(plain(&env.env, "TM_PROFILE", "dev"), overlay);
        assert_ne!(env.hpa, base.hpa, "{overlay} keeps the base's autoscaling");
        for pool in ["TM_DB_POOL_MAX_WEB", "TM_DB_POOL_MAX_WORKER"] {
            assert!(
                matches!(env.env.get(pool), Some(Source::Plain(_))),
                "{overlay}: no {pool}"
            );
        }
        let pools = |s: &Shape| {
            (
                plain(&s.env, "TM_DB_POOL_MAX_WEB", "").to_owned(),
                plain(&s.env, "TM_DB_POOL_MAX_WORKER", "").to_owned(),
            )
        };
        assert_ne!(
            pools(&env),
            pools(&base),
            "{overlay} keeps the base's pools"
        );
        // A budget that lets no pod go would block every node drain.
        assert!(
            disruptions_allowed(&env.pdb, env.hpa.0) >= 1,
            "{overlay}: {:?}",
            env.pdb
        );
        let connections = primary_connections(&env);
        eprintln!("{overlay}: at most {connections} connections on the primary");
        if overlay != "prod" {
            // PostgreSQL's default max_connections, less the superusers' reserve.
            assert!(connections <= 97, "{overlay}: {connections} connections");
        }
    }
    let dev = shape(&render(&kubectl, "overlays/dev"));
    assert_ne!(
        plain(&dev.env, "TM_LOG_LEVEL", "info"),
        plain(&base.env, "TM_LOG_LEVEL", "info")
    );
    let prod = shape(&render(&kubectl, "overlays/prod"));
    assert!(
        prod.hpa.0 >= 3,
        "prod runs {} web pods at least",
        prod.hpa.0
    );
    assert!(
        prod.hpa.0 > base.hpa.0 && prod.hpa.1 > base.hpa.1,
        "{:?}",
        prod.hpa
    );
    assert!(prod.workers >= 2, "prod runs {} workers", prod.workers);
    let (min, max) = prod.hpa;
    let stricter = (min..=max)
        .all(|n| disruptions_allowed(&prod.pdb, n) <= disruptions_allowed(&base.pdb, n))
        && (min..=max)
            .any(|n| disruptions_allowed(&prod.pdb, n) < disruptions_allowed(&base.pdb, n));
    assert!(
        stricter,
        "prod's budget {:?} is not stricter than {:?}",
        prod.pdb, base.pdb
    );
    // About 350 MiB resident on a million routes.
    assert!(
        prod.web_memory.0 >= 512.0 * 1024.0 * 1024.0,
        "{:?}",
        prod.web_memory
    );
    assert!(
        prod.web_memory.0 > base.web_memory.0,
        "{:?}",
        prod.web_memory
    );
}

/// A stand-in for a Secret's value, of the form the setting takes.
fn placeholder(variable: &str) -> &'static str {
    match variable {
        "TM_DATABASE_URL" | "TM_DATABASE_DIRECT_URL" | "TM_DATABASE_REPLICA_URLS" => {
            "postgres://tm:placeholder@postgres.invalid:5432/tm"
        }
        "TM_REDIS_URL" => "redis://redis.invalid:6379",
        "TM_BOOTSTRAP_ADMIN_KEY" => "placeholder-admin-key-0123456789abcdef",
        "TM_SECRETS_KEY" => "k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "TM_SNAPSHOT_KEY" => "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        _ => "placeholder",
    }
}

/// `traffic-manager check-config` accepts the settings every container of every
/// overlay gets (with stand-ins for the Secrets' values, the optional ones left out),
/// and the effective configuration is what the overlay meant.
#[test]
fn the_service_accepts_the_settings_of_every_container() {
    let Some(kubectl) = tool("TM_TEST_KUBECTL", "rendering the Kubernetes manifests") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    for overlay in OVERLAYS {
        let objects = render(&kubectl, &format!("overlays/{overlay}"));
        for (workload, template) in workloads(&objects) {
            for container in containers(template) {
                let env = environment(container, &objects, &mut Vec::new());
                let mut cmd = Command::new(BIN);
                cmd.arg("check-config").env_clear().current_dir(dir.path());
                for (variable, source) in &env {
                    match source {
                        Source::Plain(value) => cmd.env(variable, value),
                        Source::Secret { optional: false } => {
                            cmd.env(variable, placeholder(variable))
                        }
                        _ => &mut cmd,
                    };
                }
                let out = run(&mut cmd);
                let stdout = String::from_utf8_lossy(&out.stdout);
                let place = format!("{overlay}: {}", what(workload));
                assert!(
                    out.status.success(),
                    "{place}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                assert!(
                    stdout.contains(&format!("profile = \"{overlay}\"")),
                    "{place}:\n{stdout}"
                );
                assert!(
                    stdout.contains("data_dir = \"/var/lib/traffic-manager\""),
                    "{place}:\n{stdout}"
                );
                assert!(
                    stdout.contains("database_url = \"postgres://"),
                    "{place}:\n{stdout}"
                );
                if matches!(subcommand(container), "serve" | "worker") {
                    assert!(
                        stdout.contains("listen = \"0.0.0.0:8080\""),
                        "{place}:\n{stdout}"
                    );
                    let process_type = if subcommand(container) == "serve" {
                        "web"
                    } else {
                        "worker"
                    };
                    assert!(
                        stdout.contains(&format!("process_type = \"{process_type}\"")),
                        "{place}:\n{stdout}"
                    );
                    // The pool of the process's type is the one it opens.
                    let pool = format!("TM_DB_POOL_MAX_{}", process_type.to_uppercase());
                    let size = plain(&env, &pool, "");
                    assert!(
                        !size.is_empty() && stdout.contains(&format!("db_pool_max = {size}\n")),
                        "{place}: {pool}={size}:\n{stdout}"
                    );
                }
            }
        }
    }
}
