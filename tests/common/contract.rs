//! `openapi.yaml` as the checked contract of the API (issue 24): every answer a black-box test
//! receives from `/v1` is checked against the document, through the [`observer`] the
//! harness's clients carry.
//!
//! - The path and method must be a documented operation, and the status one of its
//!   documented responses (`/v1` paths that are not documented must answer `route_missing`).
//! - A JSON body must match the response's schema, with every object schema that lists
//!   `properties` taken as closed (`additionalProperties: false` unless it says otherwise):
//!   a field the code adds and the document lacks fails, and so does a documented `required`
//!   field the code leaves out, or a value outside a documented enumeration.
//! - A body of another media type must be one the response documents.
#![allow(
    dead_code,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::panic
)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use moongate_contract::{HttpRequest, HttpResponse};
use serde_json::{Map, Value};

/// The document, as JSON.
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let docs = yaml_rust2::YamlLoader::load_from_str(&text)
            .unwrap_or_else(|e| panic!("openapi.yaml is not YAML: {e}"));
        assert_eq!(docs.len(), 1, "openapi.yaml holds one document");
        to_json(&docs[0])
    })
}

fn to_json(yaml: &yaml_rust2::Yaml) -> Value {
    use yaml_rust2::Yaml;
    match yaml {
        Yaml::Real(text) => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Null, Value::Number),
        Yaml::Integer(n) => Value::from(*n),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        Yaml::Hash(map) => {
            let mut object = Map::new();
            for (key, value) in map {
                let key = match key {
                    Yaml::String(s) => s.clone(),
                    Yaml::Integer(n) => n.to_string(),
                    Yaml::Boolean(b) => b.to_string(),
                    other => panic!("openapi.yaml: a key that is not a string: {other:?}"),
                };
                assert!(
                    object.insert(key.clone(), to_json(value)).is_none(),
                    "openapi.yaml: key {key} twice in one mapping"
                );
            }
            Value::Object(object)
        }
        Yaml::Null => Value::Null,
        other => panic!("openapi.yaml: unsupported YAML node {other:?}"),
    }
}

/// `(method, path template)` of every documented operation, e.g. `("POST", "/v1/payments")`.
pub fn operations() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, item) in document()["paths"].as_object().unwrap() {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                out.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    out.sort();
    out
}

/// The documented template a concrete path matches (literal segments win over parameters).
pub fn template_of(path: &str) -> Option<String> {
    let segments: Vec<&str> = path.split('/').collect();
    let mut best: Option<(usize, &String)> = None;
    for template in document()["paths"].as_object().unwrap().keys() {
        let parts: Vec<&str> = template.split('/').collect();
        if parts.len() != segments.len() {
            continue;
        }
        let mut literal = 0;
        let fits = parts.iter().zip(&segments).all(|(part, segment)| {
            if part.starts_with('{') && part.ends_with('}') {
                !segment.is_empty()
            } else {
                literal += 1;
                part == segment
            }
        });
        if fits && best.is_none_or(|(n, _)| literal > n) {
            best = Some((literal, template));
        }
    }
    best.map(|(_, t)| t.clone())
}

/// Resolves a local `$ref` (`#/components/…`) to its JSON pointer and target.
fn resolve(value: &Value, pointer: String) -> (String, &Value) {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let target = reference.strip_prefix('#').unwrap().to_owned();
            let resolved = document()
                .pointer(&target)
                .unwrap_or_else(|| panic!("openapi.yaml: dangling $ref {reference}"));
            resolve(resolved, target)
        }
        None => (pointer, value),
    }
}

fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Every object schema with `properties` and no word on other properties is closed.
fn close_objects(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.contains_key("properties")
                && !map.contains_key("additionalProperties")
                && !map.contains_key("unevaluatedProperties")
            {
                map.insert("additionalProperties".to_owned(), Value::Bool(false));
            }
            for (_, child) in map.iter_mut() {
                close_objects(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(close_objects),
        _ => {}
    }
}

/// The document with closed objects: the root every validator refers into.
fn closed_document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = document().clone();
        close_objects(&mut doc);
        doc
    })
}

fn validator(pointer: &str) -> Arc<jsonschema::Validator> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<jsonschema::Validator>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut cache = cache.lock().unwrap();
    if let Some(v) = cache.get(pointer) {
        return Arc::clone(v);
    }
    // The whole document is the root, so `#/components/…` references resolve; the schema to
    // apply is named by a `$ref` at the root (OpenAPI's own keywords are ignored there).
    let mut root = closed_document().clone();
    root.as_object_mut().unwrap().insert(
        "$ref".to_owned(),
        Value::String(format!(
            "#{}",
            pointer.replace('{', "%7B").replace('}', "%7D")
        )),
    );
    let compiled = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&root)
        .unwrap_or_else(|e| panic!("openapi.yaml: schema at {pointer} does not compile: {e}"));
    let compiled = Arc::new(compiled);
    cache.insert(pointer.to_owned(), Arc::clone(&compiled));
    compiled
}

/// Checks a JSON value against the schema at `pointer` (e.g. `/components/schemas/Payment`).
pub fn check_value(pointer: &str, value: &Value) -> Result<(), String> {
    let validator = validator(pointer);
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// Checks one exchange against the document.
pub fn check(method: &str, path_and_query: &str, response: &HttpResponse) -> Result<(), String> {
    let path = path_and_query.split('?').next().unwrap_or_default();
    let content_type = response
        .header("content-type")
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    let Some(template) = template_of(path) else {
        // Not a documented path: the API answers it as a missing route, in the error shape.
        let body: Value = serde_json::from_slice(&response.body)
            .map_err(|_| format!("{method} {path} (undocumented): the answer is not JSON"))?;
        check_value("/components/schemas/Error", &body)
            .map_err(|e| format!("{method} {path} (undocumented): {e}"))?;
        return match body["error"]["code"].as_str() {
            Some("route_missing") => Ok(()),
            // Refused before routing (authentication, limits, unreadable bodies).
            Some(_) if response.status == 401 || response.status == 429 => Ok(()),
            _ if response.status >= 400 => Ok(()),
            _ => Err(format!(
                "{method} {path} answered {} but is not documented",
                response.status
            )),
        };
    };
    let item_pointer = format!("/paths/{}", escape(&template));
    let item = document().pointer(&item_pointer).unwrap();
    let operation_pointer = format!("{item_pointer}/{}", method.to_lowercase());
    let Some(operation) = item.get(method.to_lowercase()) else {
        // A method the path does not serve.
        return if response.status == 405 || response.status == 404 {
            Ok(())
        } else {
            Err(format!(
                "{method} {template} is not documented, yet answered {}",
                response.status
            ))
        };
    };
    let status = response.status.to_string();
    let Some(declared) = operation["responses"]
        .get(&status)
        .or_else(|| operation["responses"].get("default"))
    else {
        return Err(format!(
            "{method} {template} answered {status}, which the document does not list (it lists {})",
            operation["responses"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    let response_key = if operation["responses"].get(&status).is_some() {
        status.clone()
    } else if response.status >= 400 {
        "default".to_owned()
    } else {
        return Err(format!(
            "{method} {template} answered {status}: a success must be listed"
        ));
    };
    let (response_pointer, declared) = resolve(
        declared,
        format!("{operation_pointer}/responses/{response_key}"),
    );
    let Some(content) = declared.get("content") else {
        return if response.body.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{method} {template} {status}: a body the document does not describe"
            ))
        };
    };
    let Some(media) = content.get(&content_type) else {
        return Err(format!(
            "{method} {template} {status}: content type {content_type:?}, the document has {}",
            content
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    if content_type != "application/json" {
        return Ok(());
    }
    let body: Value = serde_json::from_slice(&response.body)
        .map_err(|e| format!("{method} {template} {status}: not JSON ({e})"))?;
    let schema_pointer = format!(
        "{response_pointer}/content/{}/schema",
        escape(&content_type)
    );
    assert!(
        media.get("schema").is_some(),
        "no schema at {schema_pointer}"
    );
    check_value(&schema_pointer, &body)
        .map_err(|e| format!("{method} {template} {status}: {e}\nbody: {body}"))
}

/// The observer the harness's clients carry: a mismatch fails the test at once.
pub fn observer() -> moongate_testkit::client::Observer {
    Arc::new(|request: &HttpRequest, response: &HttpResponse| {
        let path_and_query = request
            .url
            .splitn(4, '/')
            .nth(3)
            .map(|rest| format!("/{rest}"))
            .unwrap_or_default();
        if !path_and_query.starts_with("/v1/") && path_and_query != "/v1" {
            return;
        }
        if let Err(problem) = check(request.method.as_str(), &path_and_query, response) {
            panic!("answer does not match openapi.yaml: {problem}");
        }
    })
}
