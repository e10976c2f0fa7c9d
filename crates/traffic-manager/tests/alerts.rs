//! The Prometheus rules of `deploy/prometheus`: promtool accepts them and their unit tests
//! pass, and every alert keeps the conventions operators rely on — a severity, a summary
//! and a description, a runbook section of its own in `docs/runbooks.md`, a test case
//! that fires it and one that keeps it silent — using only metrics the service exports.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use tm_telemetry::{BackupState, Metrics, PoolFigures};

#[derive(Deserialize)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Deserialize)]
struct RuleGroup {
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
struct Rule {
    alert: Option<String>,
    record: Option<String>,
    expr: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// A promtool unit test file.
#[derive(Deserialize)]
struct TestFile {
    rule_files: Vec<String>,
    tests: Vec<TestGroup>,
}

#[derive(Deserialize)]
struct TestGroup {
    #[serde(default)]
    alert_rule_test: Vec<AlertCase>,
    #[serde(default)]
    promql_expr_test: Vec<ExprCase>,
}

#[derive(Deserialize)]
struct AlertCase {
    alertname: String,
    #[serde(default)]
    exp_alerts: Vec<ExpectedAlert>,
}

#[derive(Deserialize)]
struct ExpectedAlert {
    #[serde(default)]
    exp_annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct ExprCase {
    expr: String,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn prometheus_dir() -> PathBuf {
    repo().join("deploy/prometheus")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn rules(file: &str) -> Vec<Rule> {
    let path = prometheus_dir().join(file);
    let parsed: RuleFile = serde_yaml_ng::from_str(&read(&path))
        .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
    parsed.groups.into_iter().flat_map(|g| g.rules).collect()
}

fn alerts() -> Vec<Rule> {
    let alerts = rules("alerts.yml");
    assert!(
        alerts.iter().all(|r| r.alert.is_some()),
        "alerts.yml holds alerting rules only"
    );
    alerts
}

fn recordings() -> Vec<Rule> {
    let recordings = rules("recording.yml");
    assert!(
        recordings.iter().all(|r| r.record.is_some()),
        "recording.yml holds recording rules only"
    );
    recordings
}

/// The promtool test files, by path.
fn test_files() -> Vec<(PathBuf, TestFile)> {
    let dir = prometheus_dir().join("tests");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no promtool tests in {}", dir.display());
    paths
        .into_iter()
        .map(|path| {
            let parsed = serde_yaml_ng::from_str(&read(&path))
                .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
            (path, parsed)
        })
        .collect()
}

/// Runs promtool with `args` in `deploy/prometheus`; panics with its output unless it
/// succeeds.
fn promtool(promtool: &str, args: &[&str]) {
    let out = Command::new(promtool)
        .args(args)
        .current_dir(prometheus_dir())
        .output()
        .unwrap_or_else(|e| panic!("running {promtool}: {e}"));
    assert!(
        out.status.success(),
        "promtool {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `promtool check rules` on both rule files and `promtool test rules` on every test file.
/// The test command provides promtool through `TM_TEST_PROMTOOL`; elsewhere the check says
/// it was not run.
#[test]
fn promtool_accepts_the_rules_and_their_unit_tests_pass() {
    let Ok(path) = std::env::var("TM_TEST_PROMTOOL") else {
        eprintln!("TM_TEST_PROMTOOL is not set: promtool checks of the rules not run");
        return;
    };
    promtool(&path, &["check", "rules", "alerts.yml", "recording.yml"]);
    let tests: Vec<String> = test_files()
        .iter()
        .map(|(p, _)| format!("tests/{}", p.file_name().unwrap().to_string_lossy()))
        .collect();
    let mut args = vec!["test", "rules"];
    args.extend(tests.iter().map(String::as_str));
    promtool(&path, &args);
}

/// GitHub's anchor for a heading: lower case, spaces to hyphens, other punctuation
/// dropped, repeats numbered.
fn github_anchor(heading: &str, seen: &mut BTreeMap<String, usize>) -> String {
    let base: String = heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect();
    let count = seen.entry(base.clone()).or_insert(0);
    let anchor = if *count == 0 {
        base.clone()
    } else {
        format!("{base}-{count}")
    };
    *count += 1;
    anchor
}

/// The headings of a Markdown document by their anchors (fenced code left out).
fn headings(markdown: &str) -> BTreeMap<String, String> {
    let mut in_fence = false;
    let mut seen = BTreeMap::new();
    let mut anchors = BTreeMap::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence || !line.starts_with('#') {
            continue;
        }
        let text = line.trim_start_matches('#');
        if text.starts_with(' ') {
            let text = text.trim().to_owned();
            anchors.insert(github_anchor(&text, &mut seen), text);
        }
    }
    anchors
}

#[test]
fn github_anchors_are_computed_as_github_does() {
    let anchors = headings(
        "# Runbooks\n## Before you start\n```sh\n# not a heading\n```\n## A, b: c\n## A, b: c\n",
    );
    let expected: BTreeMap<String, String> = [
        ("runbooks", "Runbooks"),
        ("before-you-start", "Before you start"),
        ("a-b-c", "A, b: c"),
        ("a-b-c-1", "A, b: c"),
    ]
    .into_iter()
    .map(|(a, h)| (a.to_owned(), h.to_owned()))
    .collect();
    assert_eq!(anchors, expected);
}

#[test]
fn every_alert_has_a_severity_annotations_and_a_runbook_section_of_its_own() {
    let runbooks = headings(&read(&repo().join("docs/runbooks.md")));
    let mut names = BTreeSet::new();
    for rule in alerts() {
        let name = rule.alert.as_deref().expect("an alerting rule");
        assert!(names.insert(name.to_owned()), "{name} is defined twice");
        let severity = rule.labels.get("severity").map(String::as_str);
        assert!(
            matches!(severity, Some("warning" | "critical")),
            "{name}: severity is {severity:?}, not warning or critical"
        );
        for key in ["summary", "description"] {
            assert!(
                rule.annotations
                    .get(key)
                    .is_some_and(|v| !v.trim().is_empty()),
                "{name} has no {key}"
            );
        }
        let url = rule
            .annotations
            .get("runbook_url")
            .unwrap_or_else(|| panic!("{name} has no runbook_url"));
        let anchor = url
            .strip_prefix("docs/runbooks.md#")
            .unwrap_or_else(|| panic!("{name}: runbook_url {url} is not docs/runbooks.md#…"));
        let heading = runbooks.get(anchor).unwrap_or_else(|| {
            panic!("{name}: no section with anchor #{anchor} in docs/runbooks.md")
        });
        assert_eq!(
            heading, name,
            "{name}: its runbook_url leads to another section"
        );
    }
}

#[test]
fn every_alert_is_tested_firing_and_silent_and_every_recording_rule_is_tested() {
    let mut fired = BTreeSet::new();
    let mut silent = BTreeSet::new();
    let mut exprs = Vec::new();
    for (path, file) in test_files() {
        for rules in ["../alerts.yml", "../recording.yml"] {
            assert!(
                file.rule_files.iter().any(|f| f == rules),
                "{} does not load {rules}",
                path.display()
            );
        }
        for group in file.tests {
            for case in group.alert_rule_test {
                if case.exp_alerts.is_empty() {
                    silent.insert(case.alertname);
                    continue;
                }
                for alert in &case.exp_alerts {
                    for key in ["summary", "description", "runbook_url"] {
                        assert!(
                            alert.exp_annotations.contains_key(key),
                            "{}: a firing case of {} does not check its {key}",
                            path.display(),
                            case.alertname
                        );
                    }
                }
                fired.insert(case.alertname);
            }
            exprs.extend(group.promql_expr_test.into_iter().map(|c| c.expr));
        }
    }
    let names: BTreeSet<String> = alerts().into_iter().filter_map(|r| r.alert).collect();
    let never_fired: Vec<_> = names.difference(&fired).collect();
    assert!(never_fired.is_empty(), "no test fires {never_fired:?}");
    let never_silent: Vec<_> = names.difference(&silent).collect();
    assert!(
        never_silent.is_empty(),
        "no test keeps {never_silent:?} silent"
    );
    let unknown: Vec<_> = fired
        .union(&silent)
        .filter(|n| !names.contains(*n))
        .collect();
    assert!(
        unknown.is_empty(),
        "tests of alerts that do not exist: {unknown:?}"
    );
    for record in recordings().into_iter().filter_map(|r| r.record) {
        assert!(
            exprs
                .iter()
                .any(|e| selectors(e).iter().any(|(name, _)| *name == record)),
            "no promql_expr_test evaluates the recording rule {record}"
        );
    }
}

/// Words of PromQL that are not metric names: operators, modifiers and aggregations
/// (functions are recognised by the parenthesis that follows them).
/// Modifiers followed by a list of labels.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

#[rustfmt::skip]
const KEYWORDS: &[&str] = &[
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "bool", "sum", "min", "max", "avg", "count", "group", "stddev", "stdvar",
    "topk", "bottomk", "quantile", "count_values",
];

/// The index just past the string literal that opens at `i`.
fn skip_string(chars: &[char], mut i: usize) -> usize {
    let quote = chars[i];
    i += 1;
    while i < chars.len() && chars[i] != quote {
        i += if chars[i] == '\\' { 2 } else { 1 };
    }
    i + 1
}

/// The index just past the run of characters from `i` that `keep` accepts.
fn skip_while(chars: &[char], mut i: usize, keep: impl Fn(char) -> bool) -> usize {
    while i < chars.len() && keep(chars[i]) {
        i += 1;
    }
    i
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | ':')
}

/// The label names of the matchers that open with `{` at `i`, and the index past `}`.
fn matcher_labels(chars: &[char], mut i: usize) -> (Vec<String>, usize) {
    let mut labels = Vec::new();
    let mut expect_label = true;
    i += 1;
    while i < chars.len() && chars[i] != '}' {
        let c = chars[i];
        if c == '"' || c == '\'' {
            i = skip_string(chars, i);
            expect_label = false;
        } else if c == ',' {
            expect_label = true;
            i += 1;
        } else if expect_label && (c.is_ascii_alphabetic() || c == '_') {
            let end = skip_while(chars, i, |c| c.is_ascii_alphanumeric() || c == '_');
            labels.push(chars[i..end].iter().collect());
            expect_label = false;
            i = end;
        } else {
            i += 1;
        }
    }
    (labels, i + 1)
}

/// The vector selectors of a PromQL expression: each metric name with the label names its
/// matchers use.
fn selectors(expr: &str) -> Vec<(String, Vec<String>)> {
    let chars: Vec<char> = expr.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' {
            i = skip_string(&chars, i);
        } else if c == '[' {
            // A range or subquery: durations only.
            i = skip_while(&chars, i, |c| c != ']');
        } else if c.is_ascii_digit() {
            i = skip_while(&chars, i, |c| c.is_ascii_alphanumeric() || c == '.');
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let end = skip_while(&chars, i, is_name_char);
            let word: String = chars[i..end].iter().collect();
            let after = skip_while(&chars, end, char::is_whitespace);
            let opens = chars.get(after).copied();
            i = end;
            if LABEL_LISTS.contains(&word.as_str()) && opens == Some('(') {
                // The label list that follows names labels, not metrics.
                i = skip_while(&chars, after, |c| c != ')');
            } else if !KEYWORDS.contains(&word.as_str()) && opens != Some('(') {
                let mut labels = Vec::new();
                if opens == Some('{') {
                    (labels, i) = matcher_labels(&chars, after);
                }
                found.push((word, labels));
            }
        } else {
            i += 1;
        }
    }
    found
}

#[test]
fn selectors_are_read_from_promql() {
    let found = selectors(
        "sum by (namespace, job) (rate(http_requests_total{status=~\"5..\", method!=\"x,y\"}[5m])) \
         / max without (instance) (x:y:z offset 1h) > 0.01 and on (job) up == bool 1e3",
    );
    assert_eq!(
        found,
        vec![
            (
                "http_requests_total".to_owned(),
                vec!["status".to_owned(), "method".to_owned()]
            ),
            ("x:y:z".to_owned(), vec![]),
            ("up".to_owned(), vec![]),
        ]
    );
}

/// The service's exposition with a series in every labelled family the rules read.
fn exposition() -> String {
    let metrics = Metrics::new(10, "0.0.0");
    metrics.declare_endpoint("GET", "/api/v1/routes");
    metrics.set_breaker("database", 0);
    metrics.declare_rate_class("read");
    metrics.set_pool(&PoolFigures {
        pool: "primary",
        size: 1,
        idle: 1,
        in_use: 0,
        waiting: 0,
        max: 10,
    });
    metrics.set_replica_lag("replica1", 0.0);
    metrics.observe_job("purge", "done", 0.01);
    metrics.set_endpoint_health(&[(["acme", "billing", "prod", "v1"], true)]);
    metrics.set_backups(&BackupState::default());
    metrics.encode()
}

#[test]
fn rules_read_only_metrics_and_labels_the_service_exports() {
    let text = exposition();
    let recorded: BTreeSet<String> = recordings().into_iter().filter_map(|r| r.record).collect();
    let mut rules = alerts();
    rules.extend(recordings());
    for rule in rules {
        let name = rule.alert.or(rule.record).expect("a named rule");
        let found = selectors(&rule.expr);
        assert!(
            !found.is_empty(),
            "{name}: no metric found in {}",
            rule.expr
        );
        for (metric, labels) in found {
            if metric.contains(':') {
                assert!(
                    recorded.contains(&metric),
                    "{name} reads {metric}, which no rule records"
                );
                continue;
            }
            // Prometheus's own record of each scrape.
            if metric == "up" {
                continue;
            }
            let samples: Vec<&str> = text
                .lines()
                .filter(|l| {
                    l.strip_prefix(metric.as_str())
                        .is_some_and(|rest| rest.starts_with(['{', ' ']))
                })
                .collect();
            assert!(
                !samples.is_empty(),
                "{name} reads {metric}, which the service does not export"
            );
            for label in labels {
                assert!(
                    samples.iter().any(|s| s.contains(&format!("{label}=\""))),
                    "{name} matches on {metric}'s label {label}, which it does not have"
                );
            }
        }
    }
}
