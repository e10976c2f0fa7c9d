//! A bounded load test against the real application on loopback: mixed traffic at a
//! fixed rate — 90% resolve, 5% reads (list, get), 5% writes (activate, deactivate) —
//! sent open loop (each request at its scheduled time, whatever the ones before it are
//! doing).
//!
//! Thresholds: errors (any unexpected status, any transport error or time-out) < 0.1%;
//! resolve p99, timed from each request's scheduled time, under [`RESOLVE_P99_BOUND`];
//! usage of the ordinary database pools, as the circuit breaker weighs it, < 85%; the
//! process's resident memory (application and clients share it) under [`RSS_BOUND_MIB`].
//!
//! ```sh
//! TM_LOAD_SECONDS=60 cargo test -p tm-app --test load -- --nocapture
//! ```
//! `TM_LOAD_SECONDS` (default 10) is the run's length, `TM_LOAD_RATE` (default 400) the
//! requests per second.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tm_store::Store;
use tm_testing::TestApp;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

const ADMIN: &str = "load-test-admin-key-0123456789abcdef";

/// Above the clients' pool idle time-out (reqwest's 90 s), as the README asks of clients:
/// a server closing a connection as a client takes it up again fails that request, and a
/// long run would meet that race rather than anything this test is after.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

// Thresholds.
const MAX_ERROR_RATE: f64 = 0.001;
/// Generous: a debug build on two cores shared with the test's own clients; timed from
/// the scheduled send, so stalls of the sender count too.
const RESOLVE_P99_BOUND: Duration = Duration::from_millis(50);
/// Resident memory of the whole test process (application, database, every client), in
/// MiB. It starts near 20 MiB and stays well below 50 MiB in a 60 s run on SQLite in a
/// debug build; about twice that leaves room for another machine's allocator and for
/// PostgreSQL's client side.
const RSS_BOUND_MIB: u64 = 96;
const MAX_POOL_USAGE_PERCENT: u64 = 85;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_load_stays_within_its_thresholds() {
    let seconds: u64 = env("TM_LOAD_SECONDS", 10);
    let rate: u64 = env("TM_LOAD_RATE", 400);
    let run_for = Duration::from_secs(seconds);
    // Every request has a time-out; this bounds the whole, should the server hang in a
    // way nothing else sees.
    let bound = run_for + Duration::from_secs(120);
    tokio::time::timeout(bound, scenario(run_for, rate))
        .await
        .expect("the load test ended within its bound");
}

async fn scenario(run_for: Duration, rate: u64) {
    let app = TestApp::builder()
        .admin_key(ADMIN)
        .client_timeout(Duration::from_secs(5))
        .configure(|raw| raw.http.http_idle_timeout = IDLE_TIMEOUT)
        .spawn()
        .await;
    let setup = Setup::seed(&app).await;
    let sampler = Sampler::start(app.store.clone());
    let started = Instant::now();
    let good = good_traffic(&app, &setup, rate, started, run_for).await;
    let samples = sampler.finish().await;
    app.stop().await.expect("clean shutdown");

    let summary = Summary {
        seconds: run_for.as_secs(),
        rate,
        good: &good,
        samples: &samples,
    };
    eprintln!("{summary}");
    good.check(rate * run_for.as_secs());
    samples.check();
}

/// What the traffic needs: acme/billing/prod with two active versions; the id of `v1`.
struct Setup {
    v1_id: String,
}

impl Setup {
    async fn seed(app: &TestApp) -> Setup {
        let mut v1_id = String::new();
        for (version, weight) in [("v1", 90), ("v2", 10)] {
            let body = json!({"tenant":"acme","service":"billing","env":"prod","version":version,
                              "url":format!("http://{version}.internal"),"active":true,"weight":weight});
            let created = app.create_route(body).await;
            created.assert_status(StatusCode::CREATED);
            if version == "v1" {
                v1_id = created.json()["id"].as_str().expect("id").to_owned();
            }
        }
        Setup { v1_id }
    }
}

// ---- The good traffic ----

#[derive(Clone, Copy)]
enum Kind {
    Resolve,
    Read,
    Write,
}

struct Outcome {
    kind: Kind,
    /// From the request's scheduled time to its answer, read whole.
    latency: Duration,
    error: Option<String>,
}

/// Requests and errors by kind (resolve, read, write), resolve latencies, and the first
/// errors as they were seen.
#[derive(Default)]
struct Good {
    requests: [u64; 3],
    errors: [u64; 3],
    resolve_latencies: Vec<Duration>,
    first_errors: Vec<String>,
}

/// Sends the good traffic at `rate` requests a second from `started` for `run_for`, each
/// on its own task at its scheduled time, and waits for the last answer.
async fn good_traffic(
    app: &TestApp,
    setup: &Setup,
    rate: u64,
    started: Instant,
    run_for: Duration,
) -> Good {
    let period = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let mut tick = tokio::time::interval_at(started, period);
    // A late tick is sent at once, not skipped: the rate holds whatever the answers do.
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut in_flight = JoinSet::new();
    let mut good = Good::default();
    let mut n: u64 = 0;
    loop {
        let scheduled = tick.tick().await;
        if scheduled >= started + run_for {
            break;
        }
        let request = good_request(app, setup, n);
        in_flight.spawn(async move {
            let (kind, error) = request.await;
            Outcome {
                kind,
                latency: scheduled.elapsed(),
                error,
            }
        });
        n += 1;
        while let Some(done) = in_flight.try_join_next() {
            good.add(done.expect("request task"));
        }
    }
    // Each is bounded by the client's time-out.
    while let Some(done) = in_flight.join_next().await {
        good.add(done.expect("request task"));
    }
    good
}

/// The `n`th good request: its kind, and what went wrong, if anything.
fn good_request(
    app: &TestApp,
    setup: &Setup,
    n: u64,
) -> impl std::future::Future<Output = (Kind, Option<String>)> + Send + 'static {
    let (client, base) = (&app.client, app.url(""));
    let (kind, request) = match n % 20 {
        0 => {
            let action = if n.is_multiple_of(40) {
                "deactivate"
            } else {
                "activate"
            };
            let body = json!({"tenant":"acme","service":"billing","env":"prod","version":"v2"});
            let request = client.post(format!("{base}/api/v1/routes/{action}"));
            (Kind::Write, request.json(&body))
        }
        10 if n % 40 == 10 => {
            let list = format!("{base}/api/v1/routes?tenant=acme&service=billing&env=prod");
            (Kind::Read, client.get(list))
        }
        10 => (
            Kind::Read,
            client.get(format!("{base}/api/v1/routes/{}", setup.v1_id)),
        ),
        _ => (
            Kind::Resolve,
            client.get(format!(
                "{base}/api/v1/routes/resolve?tenant=acme&service=billing&env=prod&key=user-{n}"
            )),
        ),
    };
    async move {
        let error = match request.send().await {
            Ok(answer) if answer.status() == StatusCode::OK => {
                answer.bytes().await.err().map(|e| format!("body: {e}"))
            }
            Ok(answer) => Some(format!(
                "{}: {}",
                answer.status(),
                answer.text().await.unwrap_or_default()
            )),
            Err(e) => Some(format!("transport: {e}")),
        };
        (kind, error)
    }
}

impl Good {
    fn add(&mut self, outcome: Outcome) {
        let kind = outcome.kind as usize;
        self.requests[kind] += 1;
        if matches!(outcome.kind, Kind::Resolve) {
            self.resolve_latencies.push(outcome.latency);
        }
        if let Some(error) = outcome.error {
            self.errors[kind] += 1;
            if self.first_errors.len() < 5 {
                self.first_errors.push(error);
            }
        }
    }

    fn total(&self) -> u64 {
        self.requests.iter().sum()
    }

    fn error_rate(&self) -> f64 {
        self.errors.iter().sum::<u64>() as f64 / self.total().max(1) as f64
    }

    fn resolve_p99(&self) -> Duration {
        let mut latencies = self.resolve_latencies.clone();
        latencies.sort_unstable();
        latencies
            .get(latencies.len() * 99 / 100)
            .copied()
            .unwrap_or_default()
    }

    fn check(&self, scheduled: u64) {
        // A tick's worth may fall either side of the end.
        assert!(
            self.total() + 1 >= scheduled,
            "{} of {scheduled} requests were sent",
            self.total()
        );
        assert!(
            self.error_rate() < MAX_ERROR_RATE,
            "error rate {:.3}%, first errors: {:?}",
            self.error_rate() * 100.0,
            self.first_errors
        );
        let p99 = self.resolve_p99();
        assert!(p99 < RESOLVE_P99_BOUND, "resolve p99 {p99:?}");
    }
}

// ---- Memory and pools, sampled throughout ----

struct Sampler {
    stop: CancellationToken,
    task: JoinHandle<Samples>,
}

#[derive(Default)]
struct Samples {
    rss_start_mib: u64,
    peak_rss_mib: u64,
    peak_pool_usage_percent: u64,
}

impl Sampler {
    fn start(store: Arc<dyn Store>) -> Sampler {
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut samples = Samples {
                    rss_start_mib: rss_mib().unwrap_or_default(),
                    ..Samples::default()
                };
                while !stop.is_cancelled() {
                    samples.peak_pool_usage_percent = samples
                        .peak_pool_usage_percent
                        .max(pool_usage_percent(&*store));
                    samples.peak_rss_mib = samples.peak_rss_mib.max(rss_mib().unwrap_or_default());
                    // A sampling period, not a wait for anything.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                samples
            }
        });
        Sampler { stop, task }
    }

    async fn finish(self) -> Samples {
        self.stop.cancel();
        self.task.await.expect("sampler")
    }
}

/// How much of the ordinary pools is in use, taken together as the circuit breaker takes
/// them (on SQLite, the one writer connection with the readers): the critical pool and
/// read replicas' pools apart.
fn pool_usage_percent(store: &dyn Store) -> u64 {
    let (in_use, max) = store
        .pool_stats()
        .iter()
        .filter(|p| p.pool != "critical" && !p.pool.starts_with("replica"))
        .fold((0, 0), |(in_use, max), p| {
            (in_use + u64::from(p.in_use), max + u64::from(p.max))
        });
    in_use * 100 / max.max(1)
}

/// The process's resident set size (`VmRSS`), where `/proc` tells it.
fn rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024)
}

impl Samples {
    fn check(&self) {
        assert!(
            self.peak_rss_mib < RSS_BOUND_MIB,
            "resident memory reached {} MiB (bound {RSS_BOUND_MIB} MiB)",
            self.peak_rss_mib
        );
        assert!(
            self.peak_pool_usage_percent < MAX_POOL_USAGE_PERCENT,
            "pool usage reached {}%",
            self.peak_pool_usage_percent
        );
    }
}

/// The one-line summary of a run.
struct Summary<'a> {
    seconds: u64,
    rate: u64,
    good: &'a Good,
    samples: &'a Samples,
}

impl std::fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (good, samples) = (self.good, self.samples);
        write!(
            f,
            "load: {}s at {}/s: {} good requests ({} resolve, {} reads, {} writes), {} errors \
             ({:.3}%), resolve p99 {:?}, peak RSS {} MiB (at start {} MiB, bound {RSS_BOUND_MIB}), \
             peak pool usage {}%",
            self.seconds,
            self.rate,
            good.total(),
            good.requests[Kind::Resolve as usize],
            good.requests[Kind::Read as usize],
            good.requests[Kind::Write as usize],
            good.errors.iter().sum::<u64>(),
            good.error_rate() * 100.0,
            good.resolve_p99(),
            samples.peak_rss_mib,
            samples.rss_start_mib,
            samples.peak_pool_usage_percent,
        )
    }
}
