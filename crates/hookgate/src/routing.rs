//! Which of a source's routes take an event, and why each does or does not:
//! decided once, at ingest (and again on a reroute), on the parsed request,
//! with no I/O. Every route gets a verdict, kept with the event, so "why was
//! this not delivered to billing?" has its answer on the event's page.

use hookgate_core::{DeliveryId, Key, RequestView, Template};
use hookgate_store::{NewDelivery, RouteVerdict};

use crate::config::{Route, Source};

/// What routing made of one event.
#[derive(Debug, Clone, Default)]
pub struct Routed {
    /// The event's type, when the source has an `event_type` template that rendered.
    pub event_type: Option<String>,
    /// Each route of the source, in the config's order.
    pub routing: Vec<RouteVerdict>,
    /// One per matched route.
    pub deliveries: Vec<NewDelivery>,
    /// Templates (the event type, a route's keys) that could not be rendered.
    pub warnings: Vec<String>,
}

/// The reason a matched route gives.
pub const MATCHED: &str = "matched";

/// Route an event: its source's keys (`order_key`, `coalesce_key`) are each
/// delivery's unless its route has its own.
pub fn route(source: &Source, view: &RequestView<'_>, order_key: &Option<Key>, coalesce_key: &Option<Key>) -> Routed {
    let mut routed = Routed::default();
    if let Some(template) = &source.event_type {
        match template.render(view) {
            Ok(key) => routed.event_type = Some(key.to_text_lossy()),
            Err(missing) => {
                routed.warnings.push(format!("event_type {:?} not rendered: {missing}", template.as_str()));
            }
        }
    }
    for route in &source.routes {
        let verdict = judge(route, view, routed.event_type.as_deref());
        if verdict.is_ok() {
            let mut key = |field: &str, own: &Option<Template>, source_key: &Option<Key>| match own {
                None => source_key.clone(),
                Some(template) => template
                    .render(view)
                    .map_err(|missing| {
                        routed.warnings.push(format!(
                            "route {}: {field} {:?} not rendered: {missing}",
                            route.name,
                            template.as_str()
                        ))
                    })
                    .ok(),
            };
            let order_key = key("order_key", &route.order_key, order_key);
            let coalesce_key = key("coalesce_key", &route.coalesce_key, coalesce_key);
            routed.deliveries.push(NewDelivery {
                id: DeliveryId::generate(),
                destination: route.destination.clone(),
                route: route.name.clone(),
                order_key,
                coalesce_key,
            });
        }
        routed.routing.push(RouteVerdict {
            route: route.name.clone(),
            destination: route.destination.clone(),
            matched: verdict.is_ok(),
            reason: verdict.err().unwrap_or_else(|| MATCHED.to_owned()),
        });
    }
    routed
}

/// Whether one route takes the event: `Ok`, or the first thing that did not hold.
fn judge(route: &Route, view: &RequestView<'_>, event_type: Option<&str>) -> Result<(), String> {
    if !route.enabled {
        return Err("the route is disabled (enabled = false)".into());
    }
    if !route.events.is_empty() {
        let globs = || route.events.iter().map(|g| format!("{:?}", g.as_str())).collect::<Vec<_>>().join(", ");
        match event_type {
            None => return Err(format!("event_type: the event has none, and events = [{}] needs one", globs())),
            Some(kind) if !route.events.iter().any(|glob| glob.matches(kind)) => {
                return Err(format!("event_type: {kind:?} matches none of [{}]", globs()));
            }
            Some(_) => {}
        }
    }
    match &route.filter {
        Some(filter) => filter.check(view, event_type),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use hookgate_core::Headers;
    use hookgate_core::filter::{Filter, Glob};

    use super::*;
    use crate::config::{Config, Env};

    fn stripe_with(routes: &str) -> Source {
        let toml = format!(
            r#"
            [[destinations]]
            name = "billing"
            url = "http://127.0.0.1:1/"
            [[destinations]]
            name = "warehouse"
            url = "http://127.0.0.1:2/"
            [[sources]]
            name = "stripe"
            verify = {{ scheme = "none" }}
            event_type = "{{json.type}}"
            order_key = "{{json.data.object.id}}"
            {routes}
            "#
        );
        let config = Config::from_toml(&toml, &Env::default()).unwrap_or_else(|p| panic!("{p}"));
        config.sources[0].clone()
    }

    fn routed(source: &Source, body: &str) -> Routed {
        let headers = Headers::new();
        let view = RequestView::new(&headers, body.as_bytes(), b"", &[]);
        route(source, &view, &Some("in_1".into()), &None)
    }

    #[test]
    fn every_route_says_why_and_only_matches_are_delivered() {
        let source = stripe_with(
            r#"
            [[routes]]
            source = "stripe"
            destination = "billing"
            events = ["invoice.*"]
            [routes.filter]
            "json.data.object.amount_paid" = { gte = 10000 }
            [[routes]]
            source = "stripe"
            destination = "warehouse"
            order_key = "{json.data.object.customer}"
            "#,
        );
        let paid = r#"{"type":"invoice.paid","data":{"object":{"id":"in_1","customer":"cus_9","amount_paid":12000}}}"#;
        let got = routed(&source, paid);
        assert_eq!(got.event_type.as_deref(), Some("invoice.paid"));
        assert_eq!(got.routing.iter().map(|v| v.matched).collect::<Vec<_>>(), [true, true]);
        assert_eq!(got.deliveries[0].order_key, Some("in_1".into()), "the source's key");
        assert_eq!(got.deliveries[1].order_key, Some("cus_9".into()), "the route's own key");

        let small = r#"{"type":"invoice.paid","data":{"object":{"id":"in_2","customer":"cus_9","amount_paid":500}}}"#;
        let got = routed(&source, small);
        assert_eq!(got.deliveries.iter().map(|d| d.destination.as_str()).collect::<Vec<_>>(), ["warehouse"]);
        assert_eq!(got.routing[0].reason, "json.data.object.amount_paid: 500 is not >= 10000");

        let charge = r#"{"type":"charge.succeeded","data":{"object":{"id":"ch_1"}}}"#;
        let got = routed(&source, charge);
        assert_eq!(got.routing[0].reason, r#"event_type: "charge.succeeded" matches none of ["invoice.*"]"#);
        assert_eq!(
            got.warnings,
            [
                r#"route stripe->warehouse: order_key "{json.data.object.customer}" not rendered: json.data.object.customer is missing"#
            ],
            "a route's key that is missing is said"
        );
        assert_eq!(got.deliveries[0].order_key, None);
    }

    #[test]
    fn a_disabled_route_and_a_missing_type_say_so() {
        let mut source = stripe_with(r#"destination = "billing""#);
        source.routes[0].enabled = false;
        let got = routed(&source, r#"{"type":"x"}"#);
        assert!(got.deliveries.is_empty());
        assert_eq!(got.routing[0].reason, "the route is disabled (enabled = false)");

        let mut source = stripe_with(r#"destination = "billing""#);
        source.routes[0].events = vec![Glob::new("invoice.*")];
        let got = routed(&source, r#"{"no_type":1}"#);
        assert!(got.routing[0].reason.starts_with("event_type: the event has none"), "{}", got.routing[0].reason);
        assert_eq!(got.warnings.len(), 1, "the event type not rendered is a warning on the event");
    }

    #[test]
    fn a_filter_on_the_event_type_sees_it() {
        let mut source = stripe_with(r#"destination = "billing""#);
        source.routes[0].filter =
            Some(Filter::parse(&serde_json::json!({ "event_type": { "prefix": "customer." } })).unwrap());
        assert!(routed(&source, r#"{"type":"customer.created"}"#).routing[0].matched);
        assert!(!routed(&source, r#"{"type":"invoice.paid"}"#).routing[0].matched);
    }
}
