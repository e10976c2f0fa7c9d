//! A bounded mixed load with thresholds: 95% resolve, 5% writes, ramped up over the first
//! fifth of the run, against the real application on loopback.
//!
//! ```sh
//! TM_LOAD_SECONDS=60 TM_LOAD_RATE=2000 cargo test --release -p tm-app --test load -- --nocapture
//! ```
//! The test command runs a short version. Thresholds: error rate < 0.1%, resolve p99 <
//! 5 ms, database pool usage < 85% throughout.

#![allow(
    clippy::too_many_lines,
    reason = "a test (or a table of cases) reads top to bottom as one scenario"
)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use tm_testing::TestApp;
use tokio_util::sync::CancellationToken;

const ADMIN: &str = "load-test-admin-key-0123456789abcdef";

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    errors: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_load_stays_within_its_thresholds() {
    let seconds: u64 = env("TM_LOAD_SECONDS", 10);
    let rate: u64 = env("TM_LOAD_RATE", 400);
    let workers: u64 = 16;

    let app = TestApp::builder()
        .admin_key(ADMIN)
        .client_timeout(Duration::from_secs(5))
        .spawn()
        .await;
    let (client, base, store) = (app.client.clone(), app.url(""), app.store.clone());
    for (version, weight) in [("v1", 90), ("v2", 10)] {
        let body = json!({"tenant":"acme","service":"billing","env":"prod","version":version,
                          "url":format!("http://{version}.internal"),"active":true,"weight":weight});
        let reply = client
            .post(format!("{base}/api/v1/routes"))
            .json(&body)
            .send()
            .await
            .expect("seed");
        assert_eq!(reply.status(), StatusCode::CREATED);
    }

    // Pool usage, sampled throughout.
    let peak_usage = Arc::new(AtomicU64::new(0));
    let sampling = CancellationToken::new();
    let sampler = {
        let (store, peak) = (store.clone(), peak_usage.clone());
        let stop = sampling.clone();
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                for pool in store.pool_stats().iter().filter(|p| p.pool != "critical") {
                    let usage = u64::from(pool.in_use) * 100 / u64::from(pool.max.max(1));
                    peak.fetch_max(usage, Ordering::Relaxed);
                }
                // A sampling period, not a wait for anything.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let started = Instant::now();
    let run_for = Duration::from_secs(seconds);
    let ramp = run_for / 5;
    let resolve = Arc::new(Tally::default());
    let writes = Arc::new(Tally::default());
    let mut handles = Vec::new();
    for worker in 0..workers {
        let (client, base) = (client.clone(), base.clone());
        let (resolve, writes) = (resolve.clone(), writes.clone());
        handles.push(tokio::spawn(async move {
            // Workers join one by one over the ramp-up: time is what is tested.
            tokio::time::sleep(ramp.mul_f64(worker as f64 / workers as f64)).await;
            let mut tick = tokio::time::interval(Duration::from_secs_f64(workers as f64 / rate as f64));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut latencies = Vec::new();
            let mut n: u64 = 0;
            while started.elapsed() < run_for {
                tick.tick().await;
                n += 1;
                if n.is_multiple_of(20) {
                    let path = if n.is_multiple_of(40) { "deactivate" } else { "activate" };
                    let body = json!({"tenant":"acme","service":"billing","env":"prod","version":"v2"});
                    let ok = client
                        .post(format!("{base}/api/v1/routes/{path}"))
                        .json(&body)
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == StatusCode::OK);
                    writes.requests.fetch_add(1, Ordering::Relaxed);
                    if !ok {
                        writes.errors.fetch_add(1, Ordering::Relaxed);
                    }
                } else {
                    let url = format!("{base}/api/v1/routes/resolve?tenant=acme&service=billing&env=prod&key=user-{worker}-{n}");
                    let sent = Instant::now();
                    let ok = client.get(url).send().await.is_ok_and(|r| r.status() == StatusCode::OK);
                    latencies.push(sent.elapsed());
                    resolve.requests.fetch_add(1, Ordering::Relaxed);
                    if !ok {
                        resolve.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for handle in handles {
        latencies.extend(handle.await.expect("worker"));
    }
    sampling.cancel();
    let _ = sampler.await;
    app.stop().await.expect("clean shutdown");
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    let total = resolve.requests.load(Ordering::Relaxed) + writes.requests.load(Ordering::Relaxed);
    let errors = resolve.errors.load(Ordering::Relaxed) + writes.errors.load(Ordering::Relaxed);
    let error_rate = errors as f64 / total.max(1) as f64;
    let peak = peak_usage.load(Ordering::Relaxed);
    eprintln!(
        "load: {seconds}s at up to {rate} req/s: {total} requests ({} writes), {errors} errors ({:.3}%), resolve p99 {p99:?}, peak pool usage {peak}%",
        writes.requests.load(Ordering::Relaxed),
        error_rate * 100.0
    );
    assert!(
        total > rate * seconds / 2,
        "the load did not run ({total} requests)"
    );
    assert!(error_rate < 0.001, "error rate {:.3}%", error_rate * 100.0);
    assert!(p99 < Duration::from_millis(5), "resolve p99 {p99:?}");
    assert!(peak < 85, "pool usage reached {peak}%");
}
