//! The `sluice` binary as an operator meets it: `check`, startup refusals, `.env`, the
//! access log, `token`, `demo`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::process::{gateway_command, sluice, start, workdir};
use crate::support::{closed_port, Upstream};

#[test]
fn check_lists_every_error_and_exits_2() {
    let dir = workdir();
    std::fs::write(
        dir.join("bad.toml"),
        r#"
[server]
max_request_body = "lots"

[services.users]
upstreams = ["localhost:3000"]

[[routes]]
path = "/billing"
service = "billing"
"#,
    )
    .unwrap();
    let output = sluice(&dir)
        .args(["check", "--config", "bad.toml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(
        lines[0].starts_with("server.max_request_body: "),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with("services.users.upstreams[0]: "),
        "{stderr}"
    );
    assert!(
        lines[2].starts_with("routes[0].service: unknown service \"billing\""),
        "{stderr}"
    );
}

#[test]
fn check_accepts_the_example_config() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sluice.example.toml");
    let output = sluice(&workdir())
        .args(["check", "--config"])
        .arg(&example)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_gateway_refuses_to_start_on_bad_config_with_one_line_per_error() {
    let dir = workdir();
    let output = sluice(&dir)
        .env("PORT", "99999")
        .env("JWT_SECRET", "too-short")
        .env("UPSTREAMS", r#"{"x":["ftp://x"]}"#)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 3, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("PORT: ")
            && stderr.contains("JWT_SECRET: ")
            && stderr.contains("UPSTREAMS.x[0]: "),
        "{stderr}"
    );
}

#[test]
fn dotenv_is_read_and_the_real_environment_wins() {
    let dir = workdir();
    std::fs::write(dir.join(".env"), "AUTH_REQUIRED=maybe\nLOG_LEVEL=loud\n").unwrap();
    let output = sluice(&dir)
        .arg("check")
        .env("LOG_LEVEL", "warn")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("AUTH_REQUIRED: expected a boolean"),
        "{stderr}"
    );
}

/// The Node gateways' `.env.example` line, as npm's dotenv reads it: JSON with its quotes.
#[test]
fn the_seeds_dotenv_json_is_read_as_written() {
    let dir = workdir();
    std::fs::write(
        dir.join(".env"),
        "# from Real-Time-API-Gateway's .env.example\n\
         UPSTREAMS={\"example\":[\"http://localhost:3001\"]}\nPORT=3000 # the gateway\n",
    )
    .unwrap();
    let output = sluice(&dir).arg("check").output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("1 service(s)") && stdout.contains(":3000"),
        "{stdout}"
    );

    std::fs::write(dir.join(".env"), "PORT=3000\nUPSTREAMS\n").unwrap();
    let output = sluice(&dir).arg("check").output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(".env: line 2: expected NAME=value"),
        "{stderr}"
    );
}

#[test]
fn token_mints_a_verifiable_hs256_token() {
    let secret = "a-secret-of-at-least-thirty-two-characters";
    let output = sluice(&workdir())
        .args([
            "token",
            "--sub",
            "alice",
            "--ttl",
            "10m",
            "--claim",
            "role=admin",
            "--secret",
            secret,
        ])
        .output()
        .unwrap();
    assert!(output.status.success());
    let token = String::from_utf8(output.stdout).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.validate_aud = false;
    let data = jsonwebtoken::decode::<serde_json::Value>(
        token.trim(),
        &jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .unwrap();
    assert_eq!(data.claims["sub"], "alice");
    assert_eq!(data.claims["role"], "admin");
    let ttl = data.claims["exp"].as_u64().unwrap() - data.claims["iat"].as_u64().unwrap();
    assert_eq!(ttl, 600);
}

#[test]
fn token_usage_errors_exit_2() {
    let output = sluice(&workdir())
        .args([
            "token",
            "--sub",
            "x",
            "--secret",
            &"s".repeat(32),
            "--claim",
            "novalue",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("key=value"));
    let short = sluice(&workdir())
        .args(["token", "--sub", "x", "--secret", "short"])
        .output()
        .unwrap();
    assert_eq!(short.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 32 characters"));
    // Tokens that test nothing: expired when minted, no subject, own claims overridden.
    let secret = "s".repeat(32);
    for (args, why) in [
        (
            &["--sub", "x", "--ttl", "0s"][..],
            "--ttl must be at least 1s",
        ),
        (
            &["--sub", "x", "--ttl", "18446744073709551615s"][..],
            "--ttl must be at most 100 years",
        ),
        (&["--sub", ""][..], "--sub must not be empty"),
        (
            &["--sub", "x", "--claim", "exp=1"][..],
            "--claim cannot set \"exp\"",
        ),
        (
            &["--sub", "x", "--claim", "sub=bob"][..],
            "--claim cannot set \"sub\"",
        ),
        (
            &["--sub", "x", "--claim", "=v"][..],
            "--claim expects key=value",
        ),
    ] {
        let output = sluice(&workdir())
            .arg("token")
            .args(args)
            .args(["--secret", &secret])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(why), "{args:?}: {stderr}");
    }
}

/// Each command's help lists the options it takes, and only those: `demo` refuses a config
/// file, `token` opens no listener.
#[test]
fn each_command_offers_only_its_own_options() {
    let help = |command: &str| {
        let output = sluice(&workdir())
            .args([command, "--help"])
            .output()
            .unwrap();
        assert!(output.status.success());
        String::from_utf8(output.stdout).unwrap()
    };
    let demo = help("demo");
    assert!(
        demo.contains("--listen") && !demo.contains("--config"),
        "{demo}"
    );
    let token = help("token");
    assert!(
        token.contains("--config") && !token.contains("--listen"),
        "{token}"
    );
    let check = help("check");
    assert!(check.contains("--config"), "{check}");
    // Before the command, as the options were global before, they still count.
    let output = sluice(&workdir())
        .args(["--config", "/nonexistent/sluice.toml", "check"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/sluice.toml"));
}

/// `--listen` gets the same check as `server.listen`: not the admin listener's socket.
#[test]
fn listen_on_the_admin_listeners_port_is_refused() {
    let dir = workdir();
    let file = dir.join("sluice.toml");
    std::fs::write(
        &file,
        "[server]\nlisten = \"127.0.0.1:19000\"\nadmin_listen = \"127.0.0.1:19001\"\n",
    )
    .unwrap();
    let check = |listen: &str| {
        sluice(&dir)
            .args(["check", "--config"])
            .arg(&file)
            .args(["--listen", listen])
            .output()
            .unwrap()
    };
    let refused = check("127.0.0.1:19001");
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).starts_with("--listen: 127.0.0.1:19001"));
    assert_eq!(check("127.0.0.1:19002").status.code(), Some(0));
}

#[tokio::test]
async fn access_log_lines_carry_the_request_id_and_the_outcome() {
    let up = Upstream::ok().await;
    let port = closed_port();
    let mut command = gateway_command(port);
    command
        .env("UPSTREAMS", format!(r#"{{"s":["{}"]}}"#, up.url()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = start(command, port).await;
    let response = crate::support::client()
        .post(format!("http://127.0.0.1:{port}/api/s/logged?q=1"))
        .header("x-request-id", "log-me-1")
        .body("12345")
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), "ok from upstream");
    let stdout = child.0.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|line| line.contains("log-me-1"))
    })
    .await
    .unwrap()
    .expect("an access log line");
    let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["target"], "access");
    assert_eq!(entry["method"], "POST");
    assert_eq!(entry["route"], "/api/s");
    assert_eq!(entry["service"], "s");
    assert_eq!(entry["upstream"], up.url());
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["bytes_in"], 5);
    assert_eq!(entry["bytes_out"], 16);
    assert!(entry["duration_ms"].as_f64().is_some());
    assert_eq!(entry["level"], "INFO");
    assert_eq!(entry["path"], "/api/s/logged");
    assert_eq!(entry["client"], "127.0.0.1");
    assert_eq!(entry["completed"], true);
    // RFC 3339 in UTC with microseconds, within a minute of now.
    let stamp = entry["timestamp"].as_str().unwrap();
    assert_eq!(stamp.len(), "2026-12-05T06:17:25.123456Z".len(), "{stamp}");
    let logged = humantime::parse_rfc3339(stamp).unwrap();
    let skew = std::time::SystemTime::now().duration_since(logged).unwrap();
    assert!(skew < std::time::Duration::from_secs(60), "{stamp}");
}

#[tokio::test]
async fn a_stdout_nobody_reads_drops_log_lines_and_never_stalls_requests() {
    let port = closed_port();
    let mut command = gateway_command(port);
    command.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = start(command, port).await;
    // 4 MiB of lines may wait in memory and 64 KiB in the pipe: 16,000 access lines of about
    // 450 bytes are more than both hold, so some must be dropped while nobody reads.
    let url = format!("http://127.0.0.1:{port}/{}", "x".repeat(200));
    let client = crate::support::client();
    let senders: Vec<_> = (0..16)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                for _ in 0..1000 {
                    let response = client.get(&url).send().await.unwrap();
                    assert_eq!(response.status(), 404);
                }
            })
        })
        .collect();
    tokio::time::timeout(Duration::from_secs(120), async {
        for sender in senders {
            sender.await.unwrap();
        }
    })
    .await
    .expect("requests stalled behind a full stdout");
    // Once stdout is read again, a warning says how many lines were lost.
    let stdout = child.0.stdout.take().unwrap();
    let warning = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|line| line.contains("log lines dropped"))
    })
    .await
    .unwrap()
    .expect("a warning about the dropped lines");
    let entry: serde_json::Value = serde_json::from_str(&warning).unwrap();
    assert_eq!(entry["level"], "WARN");
    let dropped: u64 = entry["message"]
        .as_str()
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..16_000).contains(&dropped), "{warning}");
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let port = closed_port();
    let mut command = gateway_command(port);
    command.env("LOG_LEVEL", "silent");
    let mut child = start(command, port).await;
    let pid = child.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::task::spawn_blocking(move || child.0.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// SIGHUP (an operator's reload habit) neither stops the gateway nor cuts its connections:
/// it is logged and ignored, and SIGTERM still drains and exits 0.
#[tokio::test]
async fn sighup_is_ignored_and_logged() {
    let port = closed_port();
    let mut command = gateway_command(port);
    command.env("LOG_LEVEL", "warn").stdout(Stdio::piped());
    let mut child = start(command, port).await;
    let pid = child.0.id().to_string();
    let c = crate::support::client();
    let url = format!("http://127.0.0.1:{port}/healthz");
    assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
    for _ in 0..2 {
        assert!(Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success());
        // Delivered asynchronously (and two pending at once are one): time to die if it would.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(child.0.try_wait().unwrap().is_none(), "the gateway exited");
    assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let output = tokio::task::spawn_blocking(move || {
        let stdout = child.0.stdout.take();
        let status = child.0.wait();
        let mut text = String::new();
        if let Some(mut stdout) = stdout {
            use std::io::Read;
            let _ = stdout.read_to_string(&mut text);
        }
        (status, text)
    })
    .await
    .unwrap();
    assert_eq!(output.0.unwrap().code(), Some(0));
    assert_eq!(
        output.1.matches("SIGHUP ignored").count(),
        2,
        "{}",
        output.1
    );
}

#[tokio::test]
async fn demo_serves_traffic_through_the_gateway() {
    let port = closed_port();
    let mut command = sluice(&workdir());
    command
        .args(["demo", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null());
    let _child = start(command, port).await;
    let c = crate::support::client();
    let body: serde_json::Value = c
        .get(format!("http://127.0.0.1:{port}/api/fast/hello?name=x"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["service"], "fast");
    assert_eq!(body["request"]["path"], "/hello");
    // `fast` has three endpoints: twenty requests reach more than one of them (by chance all
    // twenty on one: about 1 in 10^9), and /admin/stats lists all three.
    let mut served_by = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let body: serde_json::Value = c
            .get(format!("http://127.0.0.1:{port}/api/fast/x"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        served_by.insert(body["served_by"].as_str().unwrap_or_default().to_owned());
    }
    assert!(served_by.len() > 1, "{served_by:?}");
    assert!(
        served_by.iter().all(|s| s.starts_with("fast#")),
        "{served_by:?}"
    );
    let stats: serde_json::Value = c
        .get(format!("http://127.0.0.1:{port}/admin/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["services"]["fast"]["upstreams"], 3);
    assert_eq!(stats["services"]["flaky"]["upstreams"], 2);
    // The WebSocket echo, bridged.
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws/echo?path=/"))
            .await
            .unwrap();
    ws.send(Message::text("hi demo")).await.unwrap();
    let echoed = loop {
        match ws.next().await.unwrap().unwrap() {
            Message::Text(text) => break text.as_str().to_owned(),
            _ => continue,
        }
    };
    assert!(echoed.contains("hi demo"), "{echoed}");
    let response = c
        .get(format!("http://127.0.0.1:{port}/api/flaky/fail"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
}
