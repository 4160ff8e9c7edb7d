//! `GET /openapi.json`: an OpenAPI 3.1 description of every route the gateway serves (no key
//! needed). A static document; the tests below hold it to the router's own route table, and
//! tests/python/test_openapi.py holds real responses to it.

use axum::http::header;
use axum::response::IntoResponse;

const DOCUMENT: &str = include_str!("openapi.json");

pub async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::DOCUMENT;
    use crate::router::route_table;
    use crate::routes::Access;

    /// `/admin/keys/{id}` and `/admin/keys/{key_id}` are one route: parameter names may differ.
    fn shape(path: &str) -> String {
        let mut out = String::new();
        let mut in_param = false;
        for c in path.chars() {
            match c {
                '{' => {
                    in_param = true;
                    out.push_str("{}");
                }
                '}' => in_param = false,
                _ if !in_param => out.push(c),
                _ => {}
            }
        }
        out
    }

    fn document() -> Value {
        serde_json::from_str(DOCUMENT).expect("openapi.json is JSON")
    }

    fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
        let mut ops = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                ops.push((method.to_uppercase(), path.clone(), op));
            }
        }
        ops
    }

    #[test]
    fn every_served_route_is_documented_and_nothing_else() {
        let doc = document();
        let documented: BTreeSet<(String, String)> = operations(&doc)
            .into_iter()
            .map(|(m, p, _)| (m, shape(&p)))
            .collect();
        let served: BTreeSet<(String, String)> = route_table()
            .into_iter()
            .map(|r| (r.method.to_string(), shape(&r.path)))
            .collect();
        let missing: Vec<_> = served.difference(&documented).collect();
        let extra: Vec<_> = documented.difference(&served).collect();
        assert!(
            missing.is_empty(),
            "served but not in openapi.json: {missing:?}"
        );
        assert!(
            extra.is_empty(),
            "in openapi.json but not served: {extra:?}"
        );
    }

    /// Each operation says who may call it as the router does: public ones need nothing, admin
    /// ones an admin scheme, and every authenticated one documents its 401 (and admin ones 403).
    #[test]
    fn security_and_errors_follow_each_routes_access() {
        let doc = document();
        let ops = operations(&doc);
        for r in route_table() {
            let (_, path, op) = ops
                .iter()
                .find(|(m, p, _)| *m == r.method.as_str() && shape(p) == shape(&r.path))
                .expect("documented (checked above)");
            let schemes: Vec<&str> = op["security"]
                .as_array()
                .unwrap_or_else(|| panic!("{path}: no `security`"))
                .iter()
                .flat_map(|req| req.as_object().into_iter().flat_map(|o| o.keys()))
                .map(String::as_str)
                .collect();
            let responses = op["responses"].as_object().expect("responses");
            match r.access {
                Access::Public => assert!(
                    !schemes.contains(&"bearer") && !schemes.contains(&"adminBearer"),
                    "{path} is public but documented with a key"
                ),
                Access::User => {
                    assert!(schemes.contains(&"bearer"), "{path}: no bearer scheme");
                    assert!(responses.contains_key("401"), "{path}: no 401");
                }
                Access::Admin => {
                    assert!(
                        schemes.contains(&"adminBearer") && !schemes.contains(&"bearer"),
                        "{path} is admin-only: {schemes:?}"
                    );
                    assert!(responses.contains_key("401"), "{path}: no 401");
                    assert!(responses.contains_key("403"), "{path}: no 403");
                }
            }
            for (status, resp) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    let text = resp.to_string();
                    assert!(
                        text.contains("#/components/responses/")
                            || text.contains("#/components/schemas/Error"),
                        "{path} {status}: not the shared error shape"
                    );
                }
            }
        }
    }

    /// Every `$ref` points at something the document defines.
    #[test]
    fn references_resolve() {
        fn walk(v: &Value, doc: &Value, at: &str) {
            match v {
                Value::Object(o) => {
                    if let Some(Value::String(r)) = o.get("$ref") {
                        let pointer = r.strip_prefix('#').expect("local $ref");
                        assert!(doc.pointer(pointer).is_some(), "{at}: dangling {r}");
                    }
                    for (k, x) in o {
                        walk(x, doc, &format!("{at}/{k}"));
                    }
                }
                Value::Array(a) => a.iter().for_each(|x| walk(x, doc, at)),
                _ => {}
            }
        }
        let doc = document();
        walk(&doc, &doc, "");
    }
}
