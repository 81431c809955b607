//! The admin API's edges: every bad parameter is the caller's 400, naming it.

use crate::support::*;

#[tokio::test]
async fn bad_parameters_are_400s_that_name_the_parameter() {
    let receiver = receiver(always_ok()).await;
    let app = spawn_app(&receiver).await;
    for (query, name) in [
        ("cursor=nonsense", "cursor"),
        ("cursor=-5", "cursor"),
        ("state=finished", "state"),
        ("limit=lots", "limit"),
        ("limit=0", "limit"),
    ] {
        let response =
            app.http.get(app.url(&format!("/api/events?{query}"))).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
        assert_eq!(response.status(), 400, "{query}");
        let body: hookgate::api::ErrorBody = response.json().await.unwrap();
        assert!(body.error.starts_with(&format!("{name}: ")), "{query}: {}", body.error);
    }
    let response = app.http.post(app.url("/api/replay?state=pending")).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(response.status(), 400, "pending events are not replayed");
    // A real cursor from a page works.
    for n in 0..3 {
        app.post("plain", &[], format!(r#"{{"id":"a{n}","object":"o{n}"}}"#)).await;
    }
    let first = app.admin("/api/events?limit=2").await;
    let cursor = first["next_cursor"].as_str().expect("a second page");
    let second = app.admin(&format!("/api/events?limit=2&cursor={cursor}")).await;
    assert_eq!(second["events"].as_array().unwrap().len(), 1);
    app.stop().await;
}
