//! The Grafana dashboard (`deploy/grafana/traffic-manager.json`) and the Prometheus rule
//! files (`deploy/prometheus/*.yml`) against the metrics the binary really exports: every
//! expression parses, and selects, groups by and shows only metric names and labels that
//! a scrape of a running `serve` has.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use promql_parser::label::MatchOp;
use promql_parser::parser::value::ValueType;
use promql_parser::parser::{self, Expr, LabelModifier, VectorMatchCardinality};
use serde_json::{json, Value};
use serde_yaml_ng::Value as Yaml;

const BIN: &str = env!("CARGO_BIN_EXE_traffic-manager");
const ADMIN_KEY: &str = "dashboard-test-admin-key-0123456789abcdef";

/// Labels Prometheus attaches to every series it scrapes.
const TARGET_LABELS: [&str; 2] = ["instance", "job"];
/// Labels a deployment's scrape configuration may attach (Kubernetes service discovery
/// adds `namespace`). Allowed in grouping clauses, where a label that some series lack
/// only makes one group fewer; never in matchers, where it would select nothing.
const DEPLOYMENT_LABELS: [&str; 1] = ["namespace"];
/// Series Prometheus itself writes for every target it scrapes, with the target labels.
const SCRAPE_SERIES: [&str; 5] = [
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];
/// The datasource every panel and query variable must use: the dashboard's variable.
const DATASOURCE: &str = "${datasource}";

/// Metric name -> the label names its series carry (as Prometheus stores them: with the
/// target labels).
type Known = BTreeMap<String, BTreeSet<String>>;

// ---------------------------------------------------------------------------------------
// What the binary exports

/// The metrics of a `serve` on a fresh SQLite store after a little traffic, once its
/// first jobs have run; scraped once and shared by the tests.
fn exported() -> &'static Known {
    static EXPORTED: OnceLock<Known> = OnceLock::new();
    EXPORTED.get_or_init(|| {
        let scrape = std::thread::spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(scrape_after_traffic())
        })
        .join()
        .expect("scrape");
        let mut known = parse_exposition(&scrape);
        for (name, labels) in configuration_only() {
            known.entry(name).or_insert(labels);
        }
        for name in SCRAPE_SERIES {
            known.insert(name.to_owned(), BTreeSet::new());
        }
        for labels in known.values_mut() {
            labels.extend(TARGET_LABELS.map(str::to_owned));
        }
        known
    })
}

/// Families whose series appear only under a configuration or an event this test does
/// not set up, and why. Their names and labels come from the application's own registry,
/// through the calls the code that records them makes.
fn configuration_only() -> Known {
    let metrics = tm_telemetry::Metrics::new(10, "0");
    // PostgreSQL with read replicas.
    metrics.set_replica_lag("replica1", 0.0);
    // Redis configured; its commands failing; its work done without it.
    metrics
        .redis_command_duration
        .with_label_values(&["ping"])
        .observe(0.001);
    metrics.redis_errors.with_label_values(&["ping"]).inc();
    metrics.observe_redis_fallback("rate_limit");
    // Routes with health checks.
    metrics.set_endpoint_health(&[(["acme", "billing", "prod", "v1"], true)]);
    const FAMILIES: [&str; 5] = [
        "db_replica_lag_seconds",
        "redis_command_duration_seconds",
        "redis_errors_total",
        "redis_fallbacks_total",
        "endpoint_health",
    ];
    let mut known = parse_exposition(&metrics.encode());
    known.retain(|name, _| FAMILIES.iter().any(|family| name.starts_with(family)));
    assert_eq!(
        FAMILIES
            .iter()
            .filter(|family| known.contains_key(**family)
                || known.contains_key(&format!("{family}_bucket")))
            .count(),
        FAMILIES.len(),
        "every configuration-only family is in the registry: {known:?}"
    );
    known
}

/// Starts `serve`, sends creates and resolves (200, 304, 404) and an unknown path, waits
/// for the first job attempts to be counted, and returns a scrape of `/metrics`.
async fn scrape_after_traffic() -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, addr) = serve(dir.path()).await;
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();
    let route = json!({"tenant": "acme", "service": "billing", "env": "prod", "version": "v1",
        "url": "http://10.0.0.7:8080", "active": true});
    let created = client
        .post(format!("{base}/api/v1/routes"))
        .bearer_auth(ADMIN_KEY)
        .json(&route)
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 201);
    let resolve = format!("{base}/api/v1/routes/resolve?tenant=acme&service=billing&env=prod");
    let found = client
        .get(&resolve)
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("resolve");
    assert_eq!(found.status(), 200);
    let etag = found.headers()["etag"].clone();
    let unchanged = client
        .get(&resolve)
        .bearer_auth(ADMIN_KEY)
        .header("if-none-match", etag)
        .send()
        .await
        .expect("resolve again");
    assert_eq!(unchanged.status(), 304);
    for path in [
        "/api/v1/routes/resolve?tenant=acme&service=nothing&env=prod",
        "/nope",
    ] {
        let missing = client
            .get(format!("{base}{path}"))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .expect("get");
        assert_eq!(missing.status(), 404, "{path}");
    }
    let started = Instant::now();
    let scrape = loop {
        let text = client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("scrape")
            .text()
            .await
            .expect("text");
        if text.contains("\njobs_processed_total{") {
            break text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no job attempt counted within 30 s:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    child.kill().await.expect("stopped");
    scrape
}

/// Starts `serve` with a clean environment on a free loopback port, looking for due
/// jobs often, and waits until it listens; returns the child and its address.
async fn serve(data_dir: &Path) -> (tokio::process::Child, String) {
    let mut cmd = tm_testing::binary_command(BIN, data_dir, ADMIN_KEY);
    cmd.env("TM_JOB_POLL_INTERVAL", "50ms");
    let (child, addr, _) = tm_testing::start_listening(cmd, "serve").await;
    (child, addr)
}

/// The metric names of a Prometheus text exposition and the label names of each; a
/// histogram gives `<name>_bucket` (with `le`), `<name>_sum` and `<name>_count`.
fn parse_exposition(text: &str) -> Known {
    let mut known = Known::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = known.entry(line[..end].to_owned()).or_default();
        let Some(mut rest) = line[end..].strip_prefix('{') else {
            continue;
        };
        while let Some((name, after)) = rest.split_once("=\"") {
            labels.insert(name.trim_start_matches(',').trim().to_owned());
            // The value runs to the first quote not escaped by a backslash.
            let mut escaped = false;
            let close = after
                .char_indices()
                .find(|&(_, c)| {
                    let closes = c == '"' && !escaped;
                    escaped = c == '\\' && !escaped;
                    closes
                })
                .map(|(i, _)| i)
                .expect("a closed label value");
            rest = &after[close + 1..];
            if rest.starts_with('}') {
                break;
            }
        }
    }
    known
}

// ---------------------------------------------------------------------------------------
// PromQL against the known metrics

/// Checks one parsed expression: its metric names, matchers and grouping labels. Returns
/// the labels its result carries; every fault found is pushed to `problems`.
struct Checker<'a> {
    known: &'a Known,
    problems: Vec<String>,
}

fn strings(labels: &[String]) -> BTreeSet<String> {
    labels.iter().cloned().collect()
}

fn string_arg(expr: Option<&Expr>) -> Option<String> {
    match expr {
        Some(Expr::StringLiteral(literal)) => Some(literal.val.clone()),
        _ => None,
    }
}

impl Checker<'_> {
    fn check(known: &Known, expr: &Expr) -> Result<BTreeSet<String>, Vec<String>> {
        let mut checker = Checker {
            known,
            problems: Vec::new(),
        };
        let labels = checker.labels(expr);
        if checker.problems.is_empty() {
            Ok(labels)
        } else {
            Err(checker.problems)
        }
    }

    /// `clause`'s labels must be among `available` (or the deployment's target labels).
    fn require(&mut self, available: &BTreeSet<String>, labels: &[String], clause: &str) {
        for label in labels {
            if !available.contains(label) && !DEPLOYMENT_LABELS.contains(&label.as_str()) {
                self.problems.push(format!(
                    "`{clause}` names the label `{label}`, which its operand lacks (it has {available:?})"
                ));
            }
        }
    }

    fn labels(&mut self, expr: &Expr) -> BTreeSet<String> {
        match expr {
            Expr::VectorSelector(selector) => self.selector(selector),
            Expr::MatrixSelector(matrix) => self.selector(&matrix.vs),
            Expr::Paren(paren) => self.labels(&paren.expr),
            Expr::Unary(unary) => self.labels(&unary.expr),
            Expr::Subquery(subquery) => self.labels(&subquery.expr),
            Expr::Aggregate(aggregate) => self.aggregate(aggregate),
            Expr::Binary(binary) => self.binary(binary),
            Expr::Call(call) => self.call(call),
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => BTreeSet::new(),
        }
    }

    fn selector(&mut self, selector: &parser::VectorSelector) -> BTreeSet<String> {
        let matchers = &selector.matchers;
        let all = || {
            matchers
                .matchers
                .iter()
                .chain(matchers.or_matchers.iter().flatten())
        };
        let name = selector.name.clone().or_else(|| {
            all()
                .find(|m| m.name == "__name__" && matches!(m.op, MatchOp::Equal))
                .map(|m| m.value.clone())
        });
        let Some(name) = name else {
            self.problems
                .push(format!("`{selector}` names no metric literally"));
            return BTreeSet::new();
        };
        let Some(labels) = self.known.get(&name) else {
            self.problems.push(format!(
                "`{name}` is not a metric the service exports (nor a recorded one)"
            ));
            return BTreeSet::new();
        };
        let labels = labels.clone();
        for matcher in all().filter(|m| m.name != "__name__") {
            if !labels.contains(&matcher.name) {
                self.problems.push(format!(
                    "`{name}` has no label `{}` (it has {labels:?})",
                    matcher.name
                ));
            }
            let equality = matches!(matcher.op, MatchOp::Equal | MatchOp::NotEqual);
            if equality && matcher.value.contains(VARIABLE_VALUE) {
                self.problems.push(format!(
                    "`{name}` matches `{}` to a dashboard variable with `{}`: a multi-value or \
                     All variable needs `=~`",
                    matcher.name, matcher.op
                ));
            }
        }
        labels
    }

    fn aggregate(&mut self, aggregate: &parser::AggregateExpr) -> BTreeSet<String> {
        let inner = self.labels(&aggregate.expr);
        if let Some(param) = &aggregate.param {
            self.labels(param);
        }
        let op = aggregate.op.to_string();
        let keeps_series = matches!(op.as_str(), "topk" | "bottomk" | "limitk" | "limit_ratio");
        let mut result = match &aggregate.modifier {
            Some(LabelModifier::Include(by)) => {
                self.require(&inner, &by.labels, &format!("{op} by"));
                strings(&by.labels)
            }
            Some(LabelModifier::Exclude(without)) => {
                self.require(&inner, &without.labels, &format!("{op} without"));
                inner
                    .difference(&strings(&without.labels))
                    .cloned()
                    .collect()
            }
            None => BTreeSet::new(),
        };
        if keeps_series {
            result = inner;
        }
        if op == "count_values" {
            result.extend(string_arg(aggregate.param.as_deref()));
        }
        result
    }

    fn binary(&mut self, binary: &parser::BinaryExpr) -> BTreeSet<String> {
        let lhs = self.labels(&binary.lhs);
        let rhs = self.labels(&binary.rhs);
        if binary.lhs.value_type() == ValueType::Scalar {
            return rhs;
        }
        if binary.rhs.value_type() == ValueType::Scalar {
            return lhs;
        }
        let Some(modifier) = &binary.modifier else {
            return lhs;
        };
        match &modifier.matching {
            Some(LabelModifier::Include(on)) => {
                self.require(&lhs, &on.labels, "on");
                self.require(&rhs, &on.labels, "on");
            }
            Some(LabelModifier::Exclude(ignoring)) => {
                let either = lhs.union(&rhs).cloned().collect();
                self.require(&either, &ignoring.labels, "ignoring");
            }
            None => {}
        }
        match (&modifier.card, binary.op.to_string().as_str()) {
            (_, "or") => lhs.union(&rhs).cloned().collect(),
            (_, "and" | "unless") => lhs,
            (VectorMatchCardinality::ManyToOne(extra), _) => {
                self.require(&rhs, &extra.labels, "group_left");
                lhs.union(&strings(&extra.labels)).cloned().collect()
            }
            (VectorMatchCardinality::OneToMany(extra), _) => {
                self.require(&lhs, &extra.labels, "group_right");
                rhs.union(&strings(&extra.labels)).cloned().collect()
            }
            _ => match &modifier.matching {
                Some(LabelModifier::Include(on)) => strings(&on.labels),
                Some(LabelModifier::Exclude(ignoring)) => lhs
                    .difference(&strings(&ignoring.labels))
                    .cloned()
                    .collect(),
                None => lhs,
            },
        }
    }

    fn call(&mut self, call: &parser::Call) -> BTreeSet<String> {
        let args: Vec<BTreeSet<String>> =
            call.args.args.iter().map(|arg| self.labels(arg)).collect();
        let first = args.first().cloned().unwrap_or_default();
        match call.func.name {
            "histogram_quantile" => {
                let buckets = args.get(1).cloned().unwrap_or_default();
                if !buckets.contains("le") {
                    self.problems.push(format!(
                        "`histogram_quantile` over series without `le` (they have {buckets:?})"
                    ));
                }
                buckets.into_iter().filter(|label| label != "le").collect()
            }
            "label_replace" => {
                let source: Vec<String> = string_arg(call.args.args.get(3).map(Box::as_ref))
                    .into_iter()
                    .filter(|source| !source.is_empty())
                    .collect();
                self.require(&first, &source, "label_replace");
                first
                    .into_iter()
                    .chain(string_arg(call.args.args.get(1).map(Box::as_ref)))
                    .collect()
            }
            "label_join" => {
                let sources: Vec<String> = call
                    .args
                    .args
                    .iter()
                    .skip(3)
                    .map(|arg| string_arg(Some(arg.as_ref())).unwrap_or_default())
                    .collect();
                self.require(&first, &sources, "label_join");
                first
                    .into_iter()
                    .chain(string_arg(call.args.args.get(1).map(Box::as_ref)))
                    .collect()
            }
            "sort_by_label" | "sort_by_label_desc" => {
                let by: Vec<String> = call
                    .args
                    .args
                    .iter()
                    .skip(1)
                    .filter_map(|arg| string_arg(Some(arg.as_ref())))
                    .collect();
                self.require(&first, &by, call.func.name);
                first
            }
            "absent" | "absent_over_time" => BTreeSet::new(),
            _ if call.func.return_type == ValueType::Scalar => BTreeSet::new(),
            _ => args.into_iter().flatten().collect(),
        }
    }
}

/// What a dashboard variable stands for while an expression is parsed and checked: it
/// fits a regex matcher (`instance=~"$instance"`), and nothing else.
const VARIABLE_VALUE: &str = ".+";

/// `expr` with Grafana's variables replaced: the interval and range macros by durations,
/// the dashboard's own variables by [`VARIABLE_VALUE`]. Any other `$name` is an error.
fn substitute(expr: &str, variables: &BTreeSet<String>) -> Result<String, String> {
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        let (name, used) = if let Some(braced) = after.strip_prefix('{') {
            let close = braced
                .find('}')
                .ok_or_else(|| format!("unclosed `${{` in `{expr}`"))?;
            let inner = &braced[..close];
            (inner.split(':').next().unwrap_or(inner), close + 2)
        } else {
            let len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..len], len)
        };
        let value = match name {
            "__rate_interval" | "__interval" => "5m",
            "__range" => "1h",
            _ if variables.contains(name) => VARIABLE_VALUE,
            _ => {
                return Err(format!(
                    "`${name}` is neither a variable of the dashboard nor \
                 `$__rate_interval`, `$__interval` or `$__range`"
                ))
            }
        };
        out.push_str(value);
        rest = &after[used..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses and checks one expression; the labels of its result.
fn check_promql(known: &Known, expr: &str) -> Result<BTreeSet<String>, Vec<String>> {
    let parsed = parser::parse(expr).map_err(|error| vec![format!("does not parse: {error}")])?;
    Checker::check(known, &parsed)
}

// ---------------------------------------------------------------------------------------
// The dashboard

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn load_dashboard() -> Value {
    let path = repo_root().join("deploy/grafana/traffic-manager.json");
    let text = std::fs::read_to_string(&path).expect("the dashboard is readable");
    serde_json::from_str(&text).expect("the dashboard is valid JSON")
}

/// Every panel, those inside rows too.
fn all_panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        all.push(panel);
        all.extend(panel["panels"].as_array().into_iter().flatten());
    }
    all
}

fn uses_the_datasource_variable(datasource: &Value) -> bool {
    datasource["uid"] == DATASOURCE && datasource["type"] == "prometheus"
}

/// The labels a legend format such as `{{instance}} {{pool}}` shows.
fn legend_labels(format: &str) -> Vec<String> {
    format
        .split("{{")
        .skip(1)
        .filter_map(|part| part.split_once("}}"))
        .map(|(label, _)| label.trim().to_owned())
        .collect()
}

/// Every fault of the dashboard, each naming its panel or variable.
fn dashboard_problems(dashboard: &Value, known: &Known) -> Vec<String> {
    let mut problems = Vec::new();
    for key in ["uid", "title"] {
        if dashboard[key].as_str().is_none_or(str::is_empty) {
            problems.push(format!("the dashboard has no `{key}`"));
        }
    }
    if !dashboard["schemaVersion"].is_u64() {
        problems.push("the dashboard has no `schemaVersion`".to_owned());
    }
    let variables = template_variables(dashboard, known, &mut problems);
    let mut ids: HashMap<u64, String> = HashMap::new();
    for panel in all_panels(dashboard) {
        let title = panel["title"].as_str().unwrap_or("(untitled)");
        let name = format!("panel {title:?} (id {})", panel["id"]);
        match panel["id"].as_u64() {
            None => problems.push(format!("{name}: no numeric id")),
            Some(id) => {
                if let Some(other) = ids.insert(id, title.to_owned()) {
                    problems.push(format!("{name}: id {id} also used by panel {other:?}"));
                }
            }
        }
        let grid = &panel["gridPos"];
        let fits = ["h", "w", "x", "y"].iter().all(|k| grid[k].is_u64())
            && grid["x"].as_u64().unwrap_or(0) + grid["w"].as_u64().unwrap_or(0) <= 24;
        if !fits {
            problems.push(format!("{name}: no gridPos within the 24 columns"));
        }
        if panel["type"] != "row" {
            problems.extend(
                panel_problems(panel, known, &variables)
                    .into_iter()
                    .map(|problem| format!("{name}: {problem}")),
            );
        }
    }
    problems
}

fn panel_problems(panel: &Value, known: &Known, variables: &BTreeSet<String>) -> Vec<String> {
    let mut problems = Vec::new();
    if !uses_the_datasource_variable(&panel["datasource"]) {
        problems.push(format!(
            "its datasource is {}, not the `{DATASOURCE}` variable",
            panel["datasource"]
        ));
    }
    let targets = panel["targets"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if targets.is_empty() {
        problems.push("no query".to_owned());
    }
    for target in targets {
        let at = format!("query {}", target["refId"].as_str().unwrap_or("?"));
        if !target["datasource"].is_null() && !uses_the_datasource_variable(&target["datasource"]) {
            problems.push(format!("{at}: its datasource is not `{DATASOURCE}`"));
        }
        let Some(expr) = target["expr"].as_str().filter(|e| !e.trim().is_empty()) else {
            problems.push(format!("{at}: no `expr`"));
            continue;
        };
        let result = substitute(expr, variables)
            .map_err(|problem| vec![problem])
            .and_then(|expr| check_promql(known, &expr));
        match result {
            Err(faults) => {
                problems.extend(faults.into_iter().map(|f| format!("{at} `{expr}`: {f}")));
            }
            Ok(labels) => {
                let legend = target["legendFormat"].as_str().unwrap_or_default();
                for label in legend_labels(legend) {
                    if !labels.contains(&label) {
                        problems.push(format!(
                            "{at}: its legend shows `{{{{{label}}}}}`, a label its result lacks \
                             (it has {labels:?})"
                        ));
                    }
                }
            }
        }
    }
    problems
}

/// The names of the dashboard's variables, after checking them: a Prometheus datasource
/// variable named `datasource`, and query variables on it whose queries fit the metrics.
fn template_variables(
    dashboard: &Value,
    known: &Known,
    problems: &mut Vec<String>,
) -> BTreeSet<String> {
    let list = dashboard["templating"]["list"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let names: BTreeSet<String> = list
        .iter()
        .filter_map(|variable| variable["name"].as_str().map(str::to_owned))
        .collect();
    let datasource = list.iter().any(|variable| {
        variable["name"] == "datasource"
            && variable["type"] == "datasource"
            && variable["query"] == "prometheus"
    });
    if !datasource {
        problems.push("no Prometheus datasource variable named `datasource`".to_owned());
    }
    for variable in list.iter().filter(|variable| variable["type"] == "query") {
        let name = format!("variable {}", variable["name"]);
        if !uses_the_datasource_variable(&variable["datasource"]) {
            problems.push(format!("{name}: its datasource is not `{DATASOURCE}`"));
        }
        // The query is a string, or (Grafana 10 and later) an object holding it.
        let query = variable["query"]
            .as_str()
            .or_else(|| variable["query"]["query"].as_str())
            .unwrap_or_default();
        if let Err(problem) = check_variable_query(query, known, &names) {
            problems.push(format!("{name} `{query}`: {problem}"));
        }
    }
    names
}

/// A query variable's query: Grafana's `label_values(selector, label)`,
/// `label_values(label)`, `query_result(expr)`, `metrics(regex)` or `label_names()`.
fn check_variable_query(
    query: &str,
    known: &Known,
    variables: &BTreeSet<String>,
) -> Result<(), String> {
    let query = query.trim();
    let (function, args) = query
        .split_once('(')
        .and_then(|(function, rest)| Some((function.trim(), rest.strip_suffix(')')?)))
        .ok_or("not a Grafana Prometheus variable query")?;
    let every_label = || {
        known
            .values()
            .flatten()
            .cloned()
            .collect::<BTreeSet<String>>()
    };
    match function {
        "label_values" => match args.rsplit_once(',') {
            None => {
                let label = args.trim();
                every_label()
                    .contains(label)
                    .then_some(())
                    .ok_or_else(|| format!("no metric has the label `{label}`"))
            }
            Some((selector, label)) => {
                let selector = substitute(selector, variables)?;
                if !matches!(parser::parse(&selector), Ok(Expr::VectorSelector(_))) {
                    return Err(format!("`{selector}` is not a series selector"));
                }
                let labels = check_promql(known, &selector).map_err(|p| p.join("; "))?;
                let label = label.trim();
                labels.contains(label).then_some(()).ok_or_else(|| {
                    format!("the series have no label `{label}` (they have {labels:?})")
                })
            }
        },
        "query_result" => {
            let expr = substitute(args, variables)?;
            check_promql(known, &expr)
                .map(drop)
                .map_err(|p| p.join("; "))
        }
        "metrics" | "label_names" => Ok(()),
        other => Err(format!(
            "`{other}` is not a Grafana Prometheus variable function"
        )),
    }
}

// ---------------------------------------------------------------------------------------
// Prometheus rule files

/// One rule of a rule file: where it is, what it records (if a recording rule) and its
/// expression.
struct Rule {
    at: String,
    record: Option<String>,
    expr: String,
}

fn yaml_text(value: &Yaml) -> Option<String> {
    match value {
        Yaml::String(text) => Some(text.clone()),
        Yaml::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// The rules of one file in Prometheus' rule-file format (`groups:` of `rules:`).
fn read_rules(path: &Path, problems: &mut Vec<String>) -> Vec<Rule> {
    let file = path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let text = std::fs::read_to_string(path).expect("rule file readable");
    let doc: Yaml = match serde_yaml_ng::from_str(&text) {
        Ok(doc) => doc,
        Err(error) => {
            problems.push(format!("{file}: not YAML: {error}"));
            return Vec::new();
        }
    };
    let Some(groups) = doc["groups"].as_sequence() else {
        problems.push(format!("{file}: no `groups` list"));
        return Vec::new();
    };
    let mut rules = Vec::new();
    for group in groups {
        let group_name = group["name"].as_str().unwrap_or("?");
        for rule in group["rules"].as_sequence().into_iter().flatten() {
            let record = rule["record"].as_str().map(str::to_owned);
            let name = record
                .clone()
                .or_else(|| rule["alert"].as_str().map(str::to_owned));
            let at = format!(
                "{file}: group {group_name:?}: rule {:?}",
                name.as_deref().unwrap_or("?")
            );
            match (name, yaml_text(&rule["expr"])) {
                (Some(_), Some(expr)) => rules.push(Rule { at, record, expr }),
                (None, _) => problems.push(format!("{at}: neither `record` nor `alert`")),
                (_, None) => problems.push(format!("{at}: no `expr`")),
            }
        }
    }
    rules
}

/// Every fault of the rule files in `dir`. A recorded name is known, with the labels its
/// expression's result carries, to every rule of every file, in whatever order.
fn rule_problems(dir: &Path, known: &Known) -> Vec<String> {
    let mut problems = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|entry| Some(entry.ok()?.path()))
                .collect()
        })
        .unwrap_or_default();
    paths.retain(|path| {
        path.extension()
            .is_some_and(|ext| ext == "yml" || ext == "yaml")
    });
    paths.sort();
    let rules: Vec<Rule> = paths
        .iter()
        .flat_map(|path| read_rules(path, &mut problems))
        .collect();
    let mut known = known.clone();
    // Recording rules may use each other: record what checks, until nothing more does.
    loop {
        let before = known.len();
        for rule in &rules {
            if let Some(record) = rule.record.as_ref().filter(|r| !known.contains_key(*r)) {
                if let Ok(labels) = check_promql(&known, &rule.expr) {
                    known.insert(record.clone(), labels);
                }
            }
        }
        if known.len() == before {
            break;
        }
    }
    for rule in &rules {
        if let Err(faults) = check_promql(&known, &rule.expr) {
            problems.extend(
                faults
                    .into_iter()
                    .map(|f| format!("{} `{}`: {f}", rule.at, rule.expr)),
            );
        }
    }
    problems
}

// ---------------------------------------------------------------------------------------
// Tests

#[test]
fn every_dashboard_query_selects_exported_metrics_and_labels() {
    let problems = dashboard_problems(&load_dashboard(), exported());
    assert!(
        problems.is_empty(),
        "the dashboard:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_rule_in_the_rule_files_selects_exported_metrics_and_labels() {
    let dir = repo_root().join("deploy/prometheus");
    if !dir.is_dir() {
        eprintln!("no deploy/prometheus: rule files not checked");
        return;
    }
    let problems = rule_problems(&dir, exported());
    assert!(
        problems.is_empty(),
        "the rule files:\n{}",
        problems.join("\n")
    );
}

/// Asserts that each expected fault is reported once, naming its place, and nothing else.
fn assert_found(problems: &[String], expected: &[(&str, &str)]) {
    for (place, fault) in expected {
        let found = problems
            .iter()
            .filter(|p| p.contains(place) && p.contains(fault))
            .count();
        assert_eq!(found, 1, "{place}: {fault}, in:\n{}", problems.join("\n"));
    }
    assert_eq!(problems.len(), expected.len(), "{}", problems.join("\n"));
}

#[test]
fn the_rule_check_knows_recorded_names_and_names_every_fault() {
    let good = tempfile::tempdir().expect("tempdir");
    // The ratio is recorded before the two rates it divides: order does not matter.
    std::fs::write(
        good.path().join("recording.yml"),
        r#"groups:
  - name: recording
    rules:
      - record: job:http_requests_5xx:ratio_rate5m
        expr: job:http_requests_5xx:rate5m / job:http_requests:rate5m
      - record: job:http_requests:rate5m
        expr: sum by (namespace, job) (rate(http_requests_total[5m]))
      - record: job:http_requests_5xx:rate5m
        expr: sum by (namespace, job) (rate(http_requests_total{status=~"5.."}[5m]))
"#,
    )
    .expect("write");
    std::fs::write(
        good.path().join("alerts.yml"),
        r#"groups:
  - name: alerts
    rules:
      - alert: HighErrorRatio
        expr: job:http_requests_5xx:ratio_rate5m{job="traffic-manager"} > 0.01
        for: 5m
      - alert: BreakerOpen
        expr: max by (job, breaker) (circuit_breaker_state{breaker="database"}) == 1
"#,
    )
    .expect("write");
    let problems = rule_problems(good.path(), exported());
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    let bad = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        bad.path().join("alerts.yaml"),
        r#"groups:
  - name: bad
    rules:
      - alert: MisspeltMetric
        expr: rate(http_requests_totl[5m]) > 0
      - alert: GroupedByMissingLabel
        expr: sum by (route) (rate(http_requests_total[5m])) > 1
      - alert: MatchedOnMissingLabel
        expr: db_pool_waiting{database="primary"} > 0
      - alert: Unparsable
        expr: rate(http_requests_total[5m] > 0
      - record: job:db_pool_waiting:max
        expr: max by (job) (db_pool_waiting)
      - alert: LabelDroppedByTheRecord
        expr: job:db_pool_waiting:max{pool="writer"} > 0
      - alert: QuantileWithoutBuckets
        expr: histogram_quantile(0.99, sum by (endpoint) (rate(http_request_duration_seconds_count[5m]))) > 1
      - alert: NoExpression
"#,
    )
    .expect("write");
    let problems = rule_problems(bad.path(), exported());
    assert_found(
        &problems,
        &[
            ("\"MisspeltMetric\"", "`http_requests_totl` is not a metric"),
            (
                "\"GroupedByMissingLabel\"",
                "`sum by` names the label `route`",
            ),
            ("\"MatchedOnMissingLabel\"", "has no label `database`"),
            ("\"Unparsable\"", "does not parse"),
            ("\"LabelDroppedByTheRecord\"", "has no label `pool`"),
            ("\"QuantileWithoutBuckets\"", "without `le`"),
            ("\"NoExpression\"", "no `expr`"),
        ],
    );
}

/// A panel of the test's own dashboards.
fn panel(id: u64, title: &str, expr: &str, legend: &str) -> Value {
    json!({"id": id, "title": title, "type": "timeseries",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": 0, "y": id},
        "targets": [{"refId": "A", "expr": expr, "legendFormat": legend}]})
}

#[test]
fn the_dashboard_check_names_every_fault_with_its_panel() {
    let s = r#"job=~"$job", instance=~"$instance""#;
    let mut dashboard = json!({"uid": "t", "title": "t", "schemaVersion": 41,
    "templating": {"list": [
        {"name": "datasource", "type": "datasource", "query": "prometheus"},
        {"name": "job", "type": "query", "datasource": {"type": "prometheus", "uid": "${datasource}"},
         "query": "label_values(build_info, job)"},
        {"name": "instance", "type": "query", "datasource": {"type": "prometheus", "uid": "${datasource}"},
         "query": {"query": "label_values(build_info{job=~\"$job\"}, pool)"}},
    ]},
    "panels": [
        panel(1, "Good", &format!("sum by (endpoint) (rate(http_requests_total{{{s}}}[$__rate_interval]))"), "{{endpoint}}"),
        {"id": 2, "title": "Row", "type": "row", "gridPos": {"h": 1, "w": 24, "x": 0, "y": 2}, "panels": [
            panel(1, "Same id", "dlq_size", ""),
        ]},
        panel(3, "Unknown metric", "sum(rate(http_request_total[5m]))", ""),
        panel(4, "Unknown label", &format!("db_pool_usage_percent{{{s}, state=\"idle\"}}"), ""),
        panel(5, "Legend label", "sum by (pool) (db_pool_waiting)", "{{instance}}"),
        panel(6, "Undefined variable", "queue_depth{queue=~\"$queue\"}", ""),
        panel(7, "Equality with a variable", "queue_depth{job=\"$job\"}", ""),
        panel(8, "Unparsable", "sum(rate(dlq_size[5m])", ""),
    ]});
    dashboard["panels"][3]["datasource"] = json!({"type": "prometheus", "uid": "prom"});
    let problems = dashboard_problems(&dashboard, exported());
    assert_found(
        &problems,
        &[
            ("variable \"instance\"", "no label `pool`"),
            ("panel \"Same id\" (id 1)", "also used by panel \"Good\""),
            (
                "panel \"Unknown metric\"",
                "`http_request_total` is not a metric",
            ),
            ("panel \"Unknown label\"", "its datasource is"),
            ("panel \"Unknown label\"", "has no label `state`"),
            ("panel \"Legend label\"", "its legend shows `{{instance}}`"),
            (
                "panel \"Undefined variable\"",
                "`$queue` is neither a variable",
            ),
            ("panel \"Equality with a variable\"", "needs `=~`"),
            ("panel \"Unparsable\"", "does not parse"),
        ],
    );
}
