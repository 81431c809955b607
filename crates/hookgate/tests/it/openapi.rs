//! `GET /api/openapi.json`: an OpenAPI 3.1 document, generated from the
//! handlers' own annotations, that a 3.1 parser (the `oas3` crate) reads, and
//! that covers every admin route the gateway answers.

use crate::support::*;

/// Every admin route and method the router serves (`http/admin.rs`).
const ROUTES: &[(&str, &str)] = &[
    ("get", "/events"),
    ("get", "/events/{id}"),
    ("post", "/events/{id}/replay"),
    ("post", "/events/{id}/reroute"),
    ("get", "/deliveries"),
    ("post", "/deliveries/{id}/replay"),
    ("post", "/replay"),
    ("get", "/stats"),
    ("get", "/destinations"),
    ("post", "/destinations/{name}/pause"),
    ("post", "/destinations/{name}/resume"),
    ("get", "/openapi.json"),
];

#[tokio::test]
async fn the_openapi_document_is_3_1_and_covers_every_route() {
    let receiver = receiver(always_ok()).await;
    let app = spawn_app(&receiver).await;
    // Public: no token needed to read the description.
    let response = app.http.get(app.url("/api/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let spec = oas3::from_json(&text).unwrap_or_else(|e| panic!("not an OpenAPI 3.1 document: {e}\n{text}"));
    assert!(spec.openapi.starts_with("3.1"), "{}", spec.openapi);
    let document: serde_json::Value = serde_json::from_str(&text).unwrap();
    let paths = document["paths"].as_object().unwrap();
    for (method, path) in ROUTES {
        assert!(paths.get(*path).and_then(|p| p.get(*method)).is_some(), "{method} {path} is not in the document");
    }
    let described: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(described, ROUTES.len(), "a route is described that this test does not know: {paths:#?}");
    assert_eq!(document["components"]["securitySchemes"]["admin_token"]["scheme"], "bearer");
    app.stop().await;
}
