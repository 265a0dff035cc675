use super::*;
use crate::config::{Config, Env};

fn router(toml: &str) -> Router {
    let config = Config::from_sources(Some(toml), &Env::default()).unwrap();
    let services = config
        .services
        .iter()
        .map(|(name, s)| (name.clone(), Arc::new(Service::new(s).unwrap())))
        .collect();
    Router::new(&config, &services).unwrap()
}

const SERVICES: &str = r#"
    [services.users]
    upstreams = ["http://127.0.0.1:1"]
    [services.admin]
    upstreams = ["http://127.0.0.1:2"]
"#;

fn routed(router: &Router, host: Option<&str>, path: &str) -> Result<(String, String), ErrorKind> {
    router
        .route(host, path)
        .map(|r| {
            (
                r.policy.stats.label.to_string(),
                r.forward_path.into_owned(),
            )
        })
        .map_err(|e| e.kind)
}

#[test]
fn service_routes_strip_the_api_prefix() {
    let r = router(SERVICES);
    assert_eq!(
        routed(&r, None, "/api/users/42"),
        Ok(("/api/users".into(), "/42".into()))
    );
    assert_eq!(
        routed(&r, None, "/api/users"),
        Ok(("/api/users".into(), "/".into()))
    );
    assert_eq!(
        routed(&r, None, "/api/users/"),
        Ok(("/api/users".into(), "/".into()))
    );
    assert_eq!(
        routed(&r, None, "/api/billing/x"),
        Err(ErrorKind::UnknownService)
    );
    assert_eq!(routed(&r, None, "/nothing"), Err(ErrorKind::RouteNotFound));
}

#[test]
fn prefix_routes_match_whole_segments_and_the_longest_wins() {
    let r = router(&format!(
        r#"{SERVICES}
        [[routes]]
        path = "/users"
        service = "users"
        [[routes]]
        path = "/users/admin"
        service = "admin"
        strip_prefix = true
    "#
    ));
    assert_eq!(
        routed(&r, None, "/users/7"),
        Ok(("/users".into(), "/users/7".into()))
    );
    assert_eq!(
        routed(&r, None, "/users"),
        Ok(("/users".into(), "/users".into()))
    );
    assert_eq!(
        routed(&r, None, "/users/admin/x"),
        Ok(("/users/admin".into(), "/x".into()))
    );
    assert_eq!(
        routed(&r, None, "/users/admin"),
        Ok(("/users/admin".into(), "/".into()))
    );
    assert_eq!(routed(&r, None, "/usersx"), Err(ErrorKind::RouteNotFound));
}

#[test]
fn exact_routes_match_only_their_path_and_hosts_fall_back() {
    let r = router(&format!(
        r#"{SERVICES}
        [[routes]]
        path = "/"
        service = "users"
        [[routes]]
        path = "/status"
        match = "exact"
        service = "admin"
        [[routes]]
        path = "/app"
        host = "admin.example.com"
        service = "admin"
    "#
    ));
    assert_eq!(
        routed(&r, None, "/status"),
        // Routes are named apart when they share a path.
        Ok(("/status exact".into(), "/status".into()))
    );
    assert_eq!(
        routed(&r, None, "/status/x"),
        Ok(("/".into(), "/status/x".into()))
    );
    assert_eq!(
        routed(&r, Some("admin.example.com"), "/app/1"),
        Ok(("/app host=admin.example.com".into(), "/app/1".into()))
    );
    assert_eq!(
        routed(&r, Some("other.example.com"), "/app/1"),
        Ok(("/".into(), "/app/1".into()))
    );
}

#[test]
fn rewrites_apply_after_stripping_and_stay_safe() {
    let r = router(&format!(
        r#"{SERVICES}
        [[routes]]
        path = "/old"
        service = "users"
        strip_prefix = true
        rewrite = {{ pattern = "^/v1/(.*)$", replace = "/v2/$1" }}
        [[routes]]
        path = "/evil"
        service = "users"
        rewrite = {{ pattern = "^/evil/(.*)$", replace = "/$1/../secret" }}
        [[routes]]
        path = "/collapse"
        service = "users"
        strip_prefix = true
        rewrite = {{ pattern = "^/v1", replace = "/" }}
    "#
    ));
    assert_eq!(
        routed(&r, None, "/old/v1/items"),
        Ok(("/old".into(), "/v2/items".into()))
    );
    assert_eq!(
        routed(&r, None, "/old/other"),
        Ok(("/old".into(), "/other".into()))
    );
    assert_eq!(routed(&r, None, "/evil/x"), Err(ErrorKind::BadRequest));
    assert_eq!(
        routed(&r, None, "/collapse/v1/x"),
        Ok(("/collapse".into(), "/x".into())),
        "a rewrite is normalised too"
    );
}

#[test]
fn a_config_route_on_a_service_route_path_leaves_that_one_its_own_name() {
    let r = router(&format!(
        r#"{SERVICES}
        [[routes]]
        path = "/api/admin"
        service = "admin"
    "#
    ));
    let mut labels: Vec<String> = r
        .policies()
        .iter()
        .map(|p| p.stats.label.to_string())
        .filter(|l| l.starts_with("/api/admin"))
        .collect();
    labels.sort();
    assert_eq!(labels, ["/api/admin", "/api/admin (service route)"]);
}
