//! Watch: a service's routing state answered as soon as it changes, as a long poll and
//! as Server-Sent Events, resumable from any generation, many watchers at once.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use tm_testing::*;

const SERVICE: &str = "tenant=acme&service=billing&env=prod";

async fn watch(app: &TestApp, extra: &str) -> Value {
    let reply = app.get(&format!("/api/v1/watch?{SERVICE}{extra}")).await;
    reply.assert_status(StatusCode::OK);
    reply.json()
}

fn generation(state: &Value) -> u64 {
    state["generation"].as_u64().expect("a generation")
}

fn versions(state: &Value) -> Vec<&str> {
    state["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| v["version"].as_str().expect("version"))
        .collect()
}

async fn create_active(app: &TestApp, version: &str) {
    let mut body = route(
        "acme",
        "billing",
        "prod",
        version,
        &format!("http://{version}.internal"),
    );
    body["active"] = json!(true);
    app.create_route(body)
        .await
        .assert_status(StatusCode::CREATED);
}

/// Reads Server-Sent Events from a response, an event at a time.
struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    async fn open(app: &TestApp, extra: &str, headers: &[(&str, &str)]) -> Self {
        let mut request = app
            .anonymous
            .get(app.url(&format!("/api/v1/watch?{SERVICE}{extra}")))
            .bearer_auth(&app.admin_key)
            .header("Accept", "text/event-stream");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("stream opened");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"].to_str().expect("ASCII"),
            "text/event-stream"
        );
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next `state` event: its id and data.
    async fn next(&mut self) -> (u64, Value) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut id = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(rest) = line.strip_prefix("id:") {
                        id = Some(rest.trim().parse::<u64>().expect("a numeric id"));
                    } else if let Some(rest) = line.strip_prefix("data:") {
                        data.push_str(rest.trim_start());
                    }
                }
                // Keep-alive comments carry no data.
                if let Some(id) = id {
                    return (id, serde_json::from_str(&data).expect("JSON data"));
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.response.chunk())
                .await
                .expect("an event within 10 s")
                .expect("the stream reads")
                .expect("the stream goes on");
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }
}

#[tokio::test]
async fn a_long_poll_answers_as_soon_as_the_service_changes() {
    let app = spawn_app().await;
    create_active(&app, "v1").await;
    let now = watch(&app, "").await;
    assert_eq!(now["changed"], true);
    assert_eq!(versions(&now), ["v1"]);
    assert_eq!(now["versions"][0]["url"], "http://v1.internal");
    assert_eq!(now["versions"][0]["serves"], true);
    assert_eq!(now["policy"], "healthy_or_all");
    let at = generation(&now);
    assert!(at >= 1);

    // Held at the current generation until a change arrives.
    let started = Instant::now();
    let held = format!("&since={at}&wait=30");
    let (state, ()) = tokio::join!(watch(&app, &held), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        create_active(&app, "v2").await;
    });
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250),
        "answered before the change: {took:?}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(state["changed"], true);
    assert_eq!(versions(&state), ["v1", "v2"]);
    assert!(generation(&state) > at);

    // Nothing changes: the wait runs out and the state is as it was.
    let latest = generation(&state);
    let started = Instant::now();
    let same = watch(&app, &format!("&since={latest}&wait=1")).await;
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(same["changed"], false);
    assert_eq!(generation(&same), latest);

    // Far behind: the current state at once. Ahead (another instance's): waits.
    let behind = watch(&app, "&since=0&wait=30").await;
    assert_eq!(
        (behind["changed"].clone(), generation(&behind)),
        (json!(true), latest)
    );
    let ahead = watch(&app, &format!("&since={}&wait=1", latest + 100)).await;
    assert_eq!(ahead["changed"], false);

    // Everything switched off: the watch says so, at a later generation.
    let held = format!("&since={latest}&wait=30");
    let (gone, ()) = tokio::join!(watch(&app, &held), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        app.deactivate("acme", "billing", "prod", "v1")
            .await
            .assert_status(StatusCode::OK);
        app.deactivate("acme", "billing", "prod", "v2")
            .await
            .assert_status(StatusCode::OK);
    });
    assert!(generation(&gone) > latest);
    let mut last = gone.clone();
    while !versions(&last).is_empty() {
        last = watch(&app, &format!("&since={}&wait=10", generation(&last))).await;
    }
    assert_eq!(last["versions"], json!([]));
    assert_eq!(last["policy"], Value::Null);
    assert!(generation(&last) > latest);
}

#[tokio::test]
async fn an_event_stream_sends_each_later_state_and_resumes_from_last_event_id() {
    let app = spawn_app().await;
    create_active(&app, "v1").await;
    let mut events = Events::open(&app, "", &[]).await;
    let (first, state) = events.next().await;
    assert_eq!(versions(&state), ["v1"]);
    assert_eq!(generation(&state), first);

    create_active(&app, "v2").await;
    let (second, state) = events.next().await;
    assert!(second > first);
    assert_eq!(versions(&state), ["v1", "v2"]);
    app.deactivate("acme", "billing", "prod", "v1")
        .await
        .assert_status(StatusCode::OK);
    let (third, state) = events.next().await;
    assert!(third > second);
    assert_eq!(versions(&state), ["v2"]);
    drop(events);

    // Resumed from the first id: the current state at once, nothing in between.
    let first_id = first.to_string();
    let mut resumed = Events::open(&app, "", &[("Last-Event-ID", first_id.as_str())]).await;
    let (id, state) = resumed.next().await;
    assert_eq!(id, third);
    assert_eq!(versions(&state), ["v2"]);
    // Resumed from the latest: nothing until the next change.
    let mut waiting = Events::open(&app, &format!("&since={third}"), &[]).await;
    app.activate("acme", "billing", "prod", "v1")
        .await
        .assert_status(StatusCode::OK);
    let (id, state) = waiting.next().await;
    assert!(id > third);
    assert_eq!(versions(&state), ["v1", "v2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_watchers_are_all_told_of_one_change_and_their_number_is_bounded() {
    const WATCHERS: usize = 300;
    let app = spawn_app_with(|raw| raw.guards.watch_max_in_flight = WATCHERS as u32).await;
    create_active(&app, "v1").await;
    let at = generation(&watch(&app, "").await);
    let path = format!("/api/v1/watch?{SERVICE}&since={at}&wait=30");
    let polls: Vec<_> = (0..WATCHERS)
        .map(|_| {
            let client = app.client.clone();
            let url = app.url(&path);
            tokio::spawn(async move {
                let reply = client.get(url).send().await.expect("sent");
                let status = reply.status();
                (
                    status,
                    reply.json::<Value>().await.unwrap_or(Value::Null),
                    Instant::now(),
                )
            })
        })
        .collect();
    // Every watcher is held before the change is made.
    eventually(Duration::from_secs(10), "every watcher held", || async {
        app.metric_value("watches_held").await >= WATCHERS as f64
    })
    .await;
    // One more is beyond the budget.
    app.get(&format!("/api/v1/watch?{SERVICE}&since={at}&wait=1"))
        .await
        .problem(StatusCode::SERVICE_UNAVAILABLE);
    let changed = Instant::now();
    create_active(&app, "v2").await;
    let mut latest = Duration::ZERO;
    for poll in polls {
        let (status, state, answered) = poll.await.expect("joined");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(state["changed"], true);
        assert_eq!(versions(&state), ["v1", "v2"]);
        latest = latest.max(answered.duration_since(changed));
    }
    eprintln!("{WATCHERS} watchers told within {latest:?} of the write");
    assert!(latest < Duration::from_secs(5), "{latest:?}");
    eventually(Duration::from_secs(5), "no watcher held", || async {
        app.metric_value("watches_held").await == 0.0
    })
    .await;
}

#[tokio::test]
async fn watches_refuse_bad_input_and_other_tenants() {
    let app = spawn_app().await;
    for bad in ["&since=-1", "&since=x", "&wait=0", "&wait=61"] {
        app.get(&format!("/api/v1/watch?{SERVICE}{bad}"))
            .await
            .problem(StatusCode::UNPROCESSABLE_ENTITY);
    }
    app.get("/api/v1/watch?tenant=acme&service=billing")
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    app.get(&format!("/api/v1/watch?{SERVICE}&colour=red"))
        .await
        .problem(StatusCode::BAD_REQUEST);
    let other = app.create_key("reader", Some("globex")).await;
    let (status, _, _) = app
        .send(
            &other,
            Method::GET,
            &format!("/api/v1/watch?{SERVICE}"),
            None,
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let own = app.create_key("reader", Some("acme")).await;
    let (status, _, body) = app
        .send(
            &own,
            Method::GET,
            &format!("/api/v1/watch?{SERVICE}"),
            None,
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["versions"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_on_one_instance_hears_of_a_change_made_on_another() {
    let first = spawn_app().await;
    // SQLite serves one process: there is no other instance.
    if first.database_url().is_none() {
        return;
    }
    let second = TestApp::builder()
        .same_database_as(&first)
        .spawn_with(|raw| {
            raw.process.snapshot_catch_up_interval = Duration::from_secs(3600);
            raw.process.snapshot_reload_interval = Duration::from_secs(3600);
        })
        .await;
    create_active(&first, "v1").await;
    let mut state = watch(&second, "&since=0&wait=10").await;
    while versions(&state) != ["v1"] {
        state = watch(&second, &format!("&since={}&wait=10", generation(&state))).await;
    }
    let at = generation(&state);
    let held = format!("&since={at}&wait=30");
    let (told, ()) = tokio::join!(watch(&second, &held), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        create_active(&first, "v2").await;
    });
    assert_eq!(told["changed"], true);
    assert_eq!(versions(&told), ["v1", "v2"]);
    // The generation is the store's: the same on both instances.
    assert_eq!(generation(&told), generation(&watch(&first, "").await));
}
