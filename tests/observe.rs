//! Observability: every `/metrics` family after the traffic that feeds it, windowed rates
//! under a steady load, overload shedding, and the live dashboard in a real browser — logged
//! in, and served under a path prefix by a proxy in front.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::streams::SseUpstream;
use crate::support::browser::Browser;
use crate::support::{admin_stats, client, error_body, service, Reply, TestGateway, Upstream};
use crate::websocket::WsUpstream;

const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

async fn scrape(gw: &TestGateway) -> String {
    let response = client().get(gw.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    response.text().await.unwrap()
}

/// The value of the one sample whose line starts with `series` (name and labels).
fn sample(text: &str, series: &str) -> f64 {
    let found: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix(series))
        .filter_map(|rest| rest.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(found.len(), 1, "one sample for {series} in:\n{text}");
    found[0]
}

/// Steady traffic: `rate` GETs a second to `url` for `seconds`, paced by a clock (a slow
/// answer does not delay the next request).
async fn steady(url: String, rate: u32, seconds: u64) -> Vec<u16> {
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / rate);
    let mut sent = Vec::new();
    for _ in 0..(u64::from(rate) * seconds) {
        ticker.tick().await;
        let url = url.clone();
        sent.push(tokio::spawn(async move {
            client().get(url).send().await.unwrap().status().as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for request in sent {
        statuses.push(request.await.unwrap());
    }
    statuses
}

#[tokio::test]
async fn request_families_count_routes_statuses_rejections_and_aborts() {
    let up = Upstream::start(|r| {
        if r.uri.path().ends_with("/slow") {
            Reply::ok("late").delay(Duration::from_secs(5))
        } else if r.uri.path().ends_with("/boom") {
            Reply::ok("boom").status(502)
        } else {
            Reply::ok("ok")
        }
    })
    .await;
    let toml = format!(
        "{}\n[[routes]]\npath = \"/limited\"\nservice = \"s\"\nrate_limit = {{ max = 1, window = \"60s\" }}\n",
        service("s", &[up.url()])
    );
    let gw = TestGateway::start(&toml, &[]).await;
    for _ in 0..3 {
        client().get(gw.url("/api/s/ok")).send().await.unwrap();
    }
    client().post(gw.url("/api/s/boom")).send().await.unwrap();
    client().get(gw.url("/nowhere")).send().await.unwrap();
    let statuses = [
        client()
            .get(gw.url("/limited/a"))
            .send()
            .await
            .unwrap()
            .status(),
        client()
            .get(gw.url("/limited/a"))
            .send()
            .await
            .unwrap()
            .status(),
    ];
    assert_eq!(statuses.map(|s| s.as_u16()), [200, 429]);
    // A client that gives up before the answer: recorded, as aborted.
    let gone = client()
        .get(gw.url("/api/s/slow"))
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(gone.is_err());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let text = scrape(&gw).await;
    let h = "gateway_http_request_duration_seconds";
    assert_eq!(
        sample(
            &text,
            &format!("{h}_count{{method=\"GET\",route=\"/api/s\",status_code=\"200\"}}")
        ),
        3.0
    );
    assert_eq!(
        sample(
            &text,
            &format!(
                "{h}_bucket{{method=\"GET\",route=\"/api/s\",status_code=\"200\",le=\"+Inf\"}}"
            )
        ),
        3.0
    );
    assert_eq!(
        sample(
            &text,
            &format!("{h}_count{{method=\"POST\",route=\"/api/s\",status_code=\"502\"}}")
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            &format!("{h}_count{{method=\"GET\",route=\"unmatched\",status_code=\"404\"}}")
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            &format!("{h}_count{{method=\"GET\",route=\"/limited\",status_code=\"429\"}}")
        ),
        1.0
    );
    assert_eq!(
        sample(&text, "sluice_route_rate_limited_total{route=\"/limited\"}"),
        1.0
    );
    assert_eq!(
        sample(&text, "sluice_route_rate_limited_total{route=\"/api/s\"}"),
        0.0
    );
    assert_eq!(
        sample(
            &text,
            "sluice_route_aborted_responses_total{route=\"/api/s\"}"
        ),
        1.0
    );
    // The client left before any answer: 499, as nginx logs it.
    let gone = format!("{h}_count{{method=\"GET\",route=\"/api/s\",status_code=\"499\"}}");
    assert_eq!(sample(&text, &gone), 1.0);
    // A HEAD answer is whole without a body.
    for _ in 0..2 {
        let head = client().head(gw.url("/healthz")).send().await.unwrap();
        assert_eq!(head.status(), 200);
    }
    let text = scrape(&gw).await;
    let admin_aborted = "sluice_route_aborted_responses_total{route=\"admin\"}";
    assert_eq!(sample(&text, admin_aborted), 0.0);
    // The same figures feed the stats: per route, and the gateway's recent errors.
    let stats = admin_stats(&gw).await;
    let limited = stats["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "/limited")
        .unwrap();
    assert_eq!(limited["rateLimited"], 1);
    assert_eq!(stats["totals"]["rateLimited"], 1);
}

#[tokio::test]
async fn upstream_families_show_latency_health_breakers_and_retries() {
    let up = Upstream::start(|r| {
        if r.uri.path().ends_with("/fail") {
            Reply::ok("no").status(503)
        } else {
            Reply::ok("ok")
        }
    })
    .await;
    let dead = format!("http://127.0.0.1:{}", crate::support::closed_port());
    let toml = format!(
        "[services.s]\nupstreams = [\"{}\", \"{dead}\"]\nbalancer = \"round_robin\"\nmax_retries = 1\n\
         breaker = {{ consecutive_failures = 2, open_for = \"60s\" }}\n",
        up.url()
    );
    let gw = TestGateway::start(&toml, &[]).await;
    for _ in 0..6 {
        let status = client()
            .get(gw.url("/api/s/ok"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(
            status, 200,
            "a refused connection is retried on the live endpoint"
        );
    }
    let text = scrape(&gw).await;
    let live = format!("service=\"s\",endpoint=\"{}\"", up.url());
    let gone = format!("service=\"s\",endpoint=\"{dead}\"");
    assert_eq!(
        sample(
            &text,
            &format!("sluice_upstream_request_duration_seconds_count{{{live}}}")
        ),
        6.0
    );
    assert_eq!(
        sample(&text, &format!("sluice_upstream_requests_total{{{live}}}")),
        6.0
    );
    assert_eq!(
        sample(&text, &format!("sluice_upstream_failures_total{{{live}}}")),
        0.0
    );
    assert!(sample(&text, &format!("sluice_upstream_failures_total{{{gone}}}")) >= 2.0);
    assert!(sample(&text, "sluice_service_retries_total{service=\"s\"}") >= 2.0);
    assert_eq!(
        sample(
            &text,
            &format!("sluice_upstream_breaker_state{{{gone},state=\"open\"}}")
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            &format!("sluice_upstream_breaker_state{{{gone},state=\"closed\"}}")
        ),
        0.0
    );
    assert_eq!(
        sample(
            &text,
            &format!("sluice_upstream_breaker_state{{{live},state=\"closed\"}}")
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            &format!("sluice_upstream_breaker_opened_total{{{gone}}}")
        ),
        1.0
    );
    assert_eq!(
        sample(&text, &format!("sluice_upstream_healthy{{{live}}}")),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            &format!("sluice_upstream_in_flight{{{live},kind=\"http\"}}")
        ),
        0.0
    );
}

#[tokio::test]
async fn stream_families_count_sse_and_websocket_traffic() {
    let sse = SseUpstream::start(
        vec![
            (Duration::ZERO, "data: one\n\n"),
            (Duration::ZERO, "data: two\n\n"),
        ],
        true,
    )
    .await;
    let ws = WsUpstream::start().await;
    let toml = format!(
        "{}\n{}",
        service("events", &[sse.url()]),
        service("chat", &[ws.url()])
    );
    let gw = TestGateway::start(&toml, &[]).await;
    let mut events = client()
        .get(gw.url("/sse/events/stream"))
        .send()
        .await
        .unwrap()
        .bytes_stream();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("two") {
        seen.extend_from_slice(&events.next().await.unwrap().unwrap());
    }
    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws/chat?path=/room", gw.addr))
            .await
            .unwrap();
    socket.send(Message::text("hello")).await.unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap(),
        Message::text("hello")
    );

    let text = scrape(&gw).await;
    let events_ep = format!("service=\"events\",endpoint=\"{}\"", sse.url());
    let chat_ep = format!("service=\"chat\",endpoint=\"{}\"", ws.url());
    assert_eq!(
        sample(&text, &format!("sluice_sse_streams{{{events_ep}}}")),
        1.0
    );
    assert_eq!(
        sample(&text, &format!("sluice_sse_events_total{{{events_ep}}}")),
        2.0
    );
    assert_eq!(
        sample(&text, &format!("sluice_sse_bytes_total{{{events_ep}}}")),
        ("data: one\n\ndata: two\n\n".len()) as f64
    );
    assert_eq!(sample(&text, "gateway_websocket_connections"), 1.0);
    assert_eq!(
        sample(&text, &format!("sluice_websocket_connections{{{chat_ep}}}")),
        1.0
    );
    for direction in ["up", "down"] {
        assert_eq!(
            sample(
                &text,
                &format!("sluice_websocket_messages_total{{{chat_ep},direction=\"{direction}\"}}")
            ),
            1.0
        );
        assert_eq!(
            sample(
                &text,
                &format!("sluice_websocket_bytes_total{{{chat_ep},direction=\"{direction}\"}}")
            ),
            5.0
        );
    }
    // An established stream is not a request in flight (it would fill the overload cap).
    assert_eq!(sample(&text, "sluice_in_flight_requests"), 0.0);
    drop(events);
    socket.close(None).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let text = scrape(&gw).await;
        let open = sample(&text, "gateway_websocket_connections")
            + sample(&text, &format!("sluice_sse_streams{{{events_ep}}}"));
        if open == 0.0 {
            assert_eq!(
                sample(
                    &text,
                    "sluice_route_aborted_responses_total{route=\"/sse/events\"}"
                ),
                1.0,
                "the stream the client left is recorded"
            );
            break;
        }
        assert!(Instant::now() < deadline, "streams still counted:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn gateway_and_process_families_are_reported() {
    let up = Upstream::ok().await;
    let gw = TestGateway::in_front_of(&up).await;
    let text = scrape(&gw).await;
    assert!(sample(&text, "sluice_open_connections") >= 1.0);
    assert_eq!(sample(&text, "sluice_in_flight_requests"), 0.0);
    assert!(sample(&text, "sluice_scheduler_delay_seconds") < 1.0);
    for reason in ["scheduler_delay", "memory", "in_flight"] {
        assert_eq!(
            sample(
                &text,
                &format!("sluice_shed_requests_total{{reason=\"{reason}\"}}")
            ),
            0.0
        );
    }
    assert_eq!(sample(&text, "sluice_config_version"), 1.0);
    assert_eq!(
        sample(
            &text,
            &format!(
                "sluice_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0
    );
    // The tests run inside one process: its figures are this test binary's, and real.
    assert!(sample(&text, "process_resident_memory_bytes") > 1e6);
    // In 10 ms ticks: a test process that just started may not have used one yet.
    assert!(sample(&text, "process_cpu_seconds_total") >= 0.0);
    assert!(sample(&text, "process_open_fds") >= 3.0);
    assert!(sample(&text, "process_threads") >= 1.0);
    assert!(sample(&text, "process_start_time_seconds") > 1.7e9);
    // Every family is described, once.
    for family in [
        "gateway_http_request_duration_seconds histogram",
        "gateway_websocket_connections gauge",
        "sluice_upstream_request_duration_seconds histogram",
        "sluice_route_rate_limited_total counter",
    ] {
        assert_eq!(
            text.matches(&format!("# TYPE {family}\n")).count(),
            1,
            "{family}"
        );
    }
}

#[tokio::test]
async fn metrics_follow_admin_protection_and_can_be_turned_off() {
    let up = Upstream::ok().await;
    let gw = TestGateway::start(
        &service("s", &[up.url()]),
        &[("AUTH_REQUIRED", "true"), ("JWT_SECRET", SECRET)],
    )
    .await;
    let refused = client().get(gw.url("/metrics")).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    error_body(refused, "unauthorized").await;
    let token = sluice::token::mint(SECRET, "ops", Duration::from_secs(60), &[]).unwrap();
    let allowed = client()
        .get(gw.url("/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    // The probes stay open for orchestrators.
    for probe in ["/healthz", "/_pressure"] {
        assert_eq!(
            client().get(gw.url(probe)).send().await.unwrap().status(),
            200
        );
    }

    let toml = format!(
        "{}\n[metrics]\nenabled = false\n",
        service("s", &[up.url()])
    );
    let off = TestGateway::start(&toml, &[]).await;
    client().get(off.url("/api/s/x")).send().await.unwrap();
    let response = client().get(off.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    error_body(response, "route_not_found").await;
    assert_eq!(admin_stats(&off).await["totals"]["requests"], 0);
}

#[tokio::test]
async fn stats_report_ten_requests_a_second_under_a_steady_ten() {
    let up = Upstream::ok().await;
    let gw = TestGateway::in_front_of(&up).await;
    // Eleven seconds: the ten-second window then holds only steady seconds.
    let statuses = steady(gw.url("/api/s/x"), 10, 11).await;
    assert!(statuses.iter().all(|s| *s == 200));
    let stats = admin_stats(&gw).await;
    let rps = |v: &Value| v.as_f64().unwrap();
    for (what, value) in [
        ("totals", rps(&stats["totals"]["rps"])),
        ("service", rps(&stats["services"]["s"]["rps"])),
        (
            "route",
            rps(&stats["routes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["route"] == "/api/s")
                .unwrap()["rps"]),
        ),
    ] {
        assert!((8.0..=12.0).contains(&value), "{what} rps {value}: {stats}");
    }
    assert_eq!(stats["totals"]["errorRate"], 0.0);
    assert!(stats["totals"]["p99Ms"].as_f64().unwrap() > 0.0);
}

async fn pressure_state(gw: &TestGateway) -> Value {
    let response = client().get(gw.url("/_pressure")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn the_in_flight_cap_sheds_excess_requests_but_not_the_probes() {
    let up = Upstream::start(|_| Reply::ok("slow").delay(Duration::from_millis(800))).await;
    let toml = format!(
        "{}\n[pressure]\nmax_in_flight = 2\n[rate_limit]\nenabled = false\n",
        service("s", &[up.url()])
    );
    let gw = TestGateway::start(&toml, &[]).await;
    let requests: Vec<_> = (0..6)
        .map(|_| {
            let url = gw.url("/api/s/x");
            tokio::spawn(async move { client().get(url).send().await.unwrap() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // While the two admitted requests wait on the slow upstream: the probes answer.
    let health = client().get(gw.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let pressure = pressure_state(&gw).await;
    assert_eq!(pressure["overloaded"], true, "{pressure}");
    assert_eq!(pressure["reasons"], serde_json::json!(["in_flight"]));
    assert_eq!(pressure["inFlight"], 2);
    let mut ok = 0;
    for request in requests {
        let response = request.await.unwrap();
        match response.status().as_u16() {
            200 => ok += 1,
            503 => {
                assert_eq!(response.headers()["retry-after"], "1");
                error_body(response, "overloaded").await;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(ok, 2);
    assert_eq!(up.count(), 2, "shed requests never reach the upstream");
    let pressure = pressure_state(&gw).await;
    assert_eq!(pressure["shedTotal"]["inFlight"], 4);
    assert_eq!(pressure["inFlight"], 0);
    assert_eq!(pressure["overloaded"], false);
    // The places are given back: the next request goes through.
    let after = client().get(gw.url("/api/s/x")).send().await.unwrap();
    assert_eq!(after.status(), 200);
}

#[tokio::test]
async fn the_dashboard_is_live_with_auth_on_in_a_real_browser() {
    let up = Upstream::ok().await;
    let other = Upstream::ok().await;
    let toml = format!(
        "{}\n{}",
        service("s", &[up.url()]),
        service("t", &[other.url()])
    );
    let gw = TestGateway::start(&toml, &[("AUTH_REQUIRED", "true"), ("JWT_SECRET", SECRET)]).await;
    let token = sluice::token::mint(SECRET, "ops", Duration::from_secs(600), &[]).unwrap();
    let mut browser = Browser::launch().await;
    browser.navigate(&gw.url("/admin")).await;
    browser
        .wait_for("!!document.getElementById('token')", "the login form")
        .await;
    browser
        .eval("document.getElementById('token').focus()")
        .await;
    browser.type_text(&token).await;
    browser
        .eval("document.querySelector('button[type=submit]').click()")
        .await;
    browser
        .wait_for(
            "location.pathname === '/admin' && document.getElementById('status').dataset.state === 'live' \
             && !!document.querySelector('tr[data-service=s]') && !!document.querySelector('tr[data-service=t]')",
            "the live dashboard with both services",
        )
        .await;
    let rps = "document.getElementById('rps').textContent";
    let before = browser.eval(rps).await;
    assert_eq!(before, "0.0", "no traffic yet");
    // Steady traffic with a valid token: the figure moves, then settles at the rate sent.
    let url = gw.url("/api/s/x");
    let traffic = tokio::spawn(async move {
        let token = sluice::token::mint(SECRET, "load", Duration::from_secs(600), &[]).unwrap();
        let mut ticker = tokio::time::interval(Duration::from_millis(100));
        for _ in 0..130 {
            ticker.tick().await;
            let (url, token) = (url.clone(), token.clone());
            tokio::spawn(async move { client().get(url).bearer_auth(token).send().await });
        }
    });
    browser
        .wait_for(&format!("{rps} !== {before}"), "the rps figure to change")
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let settled = loop {
        let shown: f64 = browser.eval(rps).await.as_str().unwrap().parse().unwrap();
        if Instant::now() > deadline || (traffic.is_finished() && shown > 0.0) {
            break shown;
        }
        // Read after the ten-second window has filled with steady seconds.
        if up.count() >= 115 {
            break shown;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        (8.0..=12.0).contains(&settled),
        "the dashboard shows {settled} rps"
    );
    traffic.await.unwrap();
    let row = browser
        .eval("document.querySelector('tr[data-service=s]').textContent")
        .await;
    assert!(row.as_str().unwrap().contains("1/1"), "{row}");
    assert!(
        browser.errors.is_empty(),
        "the page reported errors: {:?}",
        browser.errors
    );
}

#[tokio::test]
async fn the_dashboard_works_under_a_path_prefix_behind_a_proxy() {
    let up = Upstream::ok().await;
    let inner = TestGateway::in_front_of(&up).await;
    // A second gateway serves the first one's ops pages under /ops.
    let front = TestGateway::start(
        &format!(
            "{}\n[[routes]]\npath = \"/ops\"\nservice = \"inner\"\nstrip_prefix = true\n\
             [routes.rate_limit]\nmax = 1000\nwindow = \"1s\"\n",
            service("inner", &[format!("http://{}", inner.addr)])
        ),
        &[],
    )
    .await;
    client().get(inner.url("/missing")).send().await.unwrap();
    let mut browser = Browser::launch().await;
    browser.navigate(&front.url("/ops/admin")).await;
    browser
        .wait_for(
            "location.pathname === '/ops/admin' && document.getElementById('status').dataset.state === 'live' \
             && !!document.querySelector('tr[data-service=s]') \
             && document.querySelectorAll('#errors tbody tr').length === 1",
            "the dashboard, live through the prefix",
        )
        .await;
    let error_row = browser
        .eval("document.querySelector('#errors tbody tr').textContent")
        .await;
    assert!(
        error_row.as_str().unwrap().contains("/missing"),
        "{error_row}"
    );
    assert!(
        browser.errors.is_empty(),
        "the page reported errors: {:?}",
        browser.errors
    );
}
