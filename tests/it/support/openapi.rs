//! Discord's published OpenAPI spec (`../shared/discord/openapi.json`) as a checker for the
//! test server: every REST request the service sends and every answer the server gives is
//! checked against the route's schema, and a field the spec does not have is an error (the spec
//! itself allows unknown fields almost everywhere; Discord's answers do not carry them, and a
//! test server that adds one — `guild_id` on history, say — hides a defect).
//!
//! The checker knows the JSON Schema keywords the spec uses: `$ref`, `type` (a name or a list),
//! `properties`, `required`, `additionalProperties`, `allOf` (its branches' properties are one
//! object), `oneOf` (exactly one), `anyOf`, `const`, `enum`, `items`, `minItems`, `maxItems`,
//! `uniqueItems`, `minLength`, `maxLength`, `minimum`, `maximum`, `minProperties`,
//! `maxProperties`, and the formats `snowflake`, `int32`, `int64` and `date-time`. It does not
//! check the spec's one other `pattern` (an embed colour of Slack webhooks, a route never used).

use std::collections::BTreeSet;
use std::sync::OnceLock;

use serde_json::Value;

/// The spec, loaded once.
pub struct Spec {
    doc: Value,
}

/// Where the spec is: `../shared` beside the clone, as CI has it.
fn spec_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/discord/openapi.json")
}

impl Spec {
    /// The spec of `../shared/discord/openapi.json` (panics if it is missing: the tests must not
    /// pass unchecked).
    pub fn get() -> &'static Self {
        static SPEC: OnceLock<Spec> = OnceLock::new();
        SPEC.get_or_init(|| {
            let path = spec_path();
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("Discord's OpenAPI spec at {}: {e}", path.display()));
            Self {
                doc: serde_json::from_str(&text).expect("the spec is JSON"),
            }
        })
    }

    /// The schema named `name` in `components/schemas`.
    pub fn schema(&self, name: &str) -> &Value {
        &self.doc["components"]["schemas"][name]
    }

    /// The operation for `method` on `path` (as sent, e.g. `/api/v10/channels/1/messages`):
    /// the route's template and its operation object. A literal segment is preferred to a
    /// parameter (`@original` over `{message_id}`).
    fn operation(&self, method: &str, path: &str) -> Option<(String, &Value)> {
        let path = path.strip_prefix("/api/v10").unwrap_or(path);
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let paths = self.doc["paths"].as_object()?;
        let mut best: Option<(usize, &String, &Value)> = None;
        for (template, item) in paths {
            let parts: Vec<&str> = template.trim_matches('/').split('/').collect();
            if parts.len() != segments.len() {
                continue;
            }
            let mut literals = 0;
            let fits = parts.iter().zip(&segments).all(|(p, s)| {
                if p.starts_with('{') {
                    true
                } else {
                    literals += 1;
                    p == s
                }
            });
            let Some(op) = item.get(method.to_ascii_lowercase()) else {
                continue;
            };
            if fits && best.is_none_or(|(n, _, _)| literals > n) {
                best = Some((literals, template, op));
            }
        }
        best.map(|(_, t, op)| (t.clone(), op))
    }

    /// What is wrong with a request: its route and method, its query, its JSON body
    /// (`payload_json` for a multipart one). Empty when it conforms.
    pub fn check_request(
        &self,
        method: &str,
        path: &str,
        query: &[(String, String)],
        body: Option<&Value>,
    ) -> Vec<String> {
        let Some((template, op)) = self.operation(method, path) else {
            return vec![format!("{method} {path}: no such route in Discord's API")];
        };
        let mut errors = Vec::new();
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        for (name, value) in query {
            let Some(p) = params
                .iter()
                .find(|p| p["in"] == "query" && p["name"] == *name)
            else {
                errors.push(format!(
                    "{method} {template}: query `{name}` is not in the spec"
                ));
                continue;
            };
            // Query values are text: a number or a boolean is read as one first.
            let as_json = value
                .parse::<i64>()
                .map(Value::from)
                .or_else(|_| value.parse::<bool>().map(Value::from))
                .unwrap_or_else(|_| Value::from(value.clone()));
            let mut found = Vec::new();
            self.validate(&p["schema"], &as_json, &format!("?{name}"), &mut found);
            if !found.is_empty() && !as_json.is_string() {
                // A snowflake that looks like a number is still a string parameter.
                found.clear();
                self.validate(
                    &p["schema"],
                    &Value::from(value.clone()),
                    &format!("?{name}"),
                    &mut found,
                );
            }
            errors.extend(
                found
                    .into_iter()
                    .map(|e| format!("{method} {template}: {e}")),
            );
        }
        let content = &op["requestBody"]["content"];
        match (body, content.is_object()) {
            (None | Some(Value::Null), _) => {}
            (Some(v), false) => errors.push(format!(
                "{method} {template}: a body, where the spec takes none: {v}"
            )),
            (Some(v), true) => {
                let schema = &content["application/json"]["schema"];
                let mut found = Vec::new();
                self.validate(schema, v, "body", &mut found);
                errors.extend(
                    found
                        .into_iter()
                        .map(|e| format!("{method} {template}: {e}")),
                );
            }
        }
        errors
    }

    /// What is wrong with an answer of `status` with `body` (`None`: empty) to `method path`.
    /// A 5xx is not checked: the spec describes none, and Discord does answer them.
    pub fn check_response(
        &self,
        method: &str,
        path: &str,
        status: u16,
        body: Option<&Value>,
    ) -> Vec<String> {
        if status >= 500 {
            return Vec::new();
        }
        let Some((template, op)) = self.operation(method, path) else {
            return vec![format!("{method} {path}: no such route in Discord's API")];
        };
        let responses = &op["responses"];
        let class = format!("{}XX", status / 100);
        let mut response = responses
            .get(status.to_string())
            .or_else(|| responses.get(&class));
        while let Some(r) = response.and_then(|r| r["$ref"].as_str()) {
            response = self.pointer(r);
        }
        let Some(response) = response else {
            return vec![format!(
                "{method} {template}: status {status} is not an answer the spec lists"
            )];
        };
        let schema = &response["content"]["application/json"]["schema"];
        let mut errors = Vec::new();
        match (body, schema.is_null()) {
            (None, true) => {}
            (Some(v), true) => errors.push(format!(
                "{method} {template} {status}: a body, where the spec has none: {v}"
            )),
            (None, false) => errors.push(format!(
                "{method} {template} {status}: no JSON body, where the spec has one"
            )),
            (Some(v), false) => self.validate(schema, v, "answer", &mut errors),
        }
        errors
            .into_iter()
            .map(|e| {
                if e.starts_with(method) {
                    e
                } else {
                    format!("{method} {template} {status}: {e}")
                }
            })
            .collect()
    }

    /// What is wrong with `value` as an instance of `schema`.
    pub fn check(&self, schema: &Value, value: &Value, at: &str) -> Vec<String> {
        let mut errors = Vec::new();
        self.validate(schema, value, at, &mut errors);
        errors
    }

    fn pointer(&self, reference: &str) -> Option<&Value> {
        self.doc.pointer(reference.strip_prefix('#')?)
    }

    /// Follows `$ref`s to the schema itself.
    fn resolve<'a>(&'a self, mut schema: &'a Value) -> &'a Value {
        while let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            match self.pointer(r) {
                Some(s) => schema = s,
                None => return &Value::Null,
            }
        }
        schema
    }

    /// Properties an object may have under `schema`: its own and those of its `allOf`
    /// branches; `None` if any other property is allowed too.
    fn known(&self, schema: &Value, into: &mut BTreeSet<String>) -> bool {
        let schema = self.resolve(schema);
        if let Some(props) = schema["properties"].as_object() {
            into.extend(props.keys().cloned());
        }
        let mut closed = !matches!(
            schema.get("additionalProperties"),
            Some(Value::Bool(true) | Value::Object(_))
        );
        for branch in schema["allOf"].as_array().into_iter().flatten() {
            closed &= self.known(branch, into);
        }
        closed
    }

    fn validate(&self, schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
        self.validate_as(schema, v, at, true, errors);
    }

    /// `strict`: a property no branch declares is an error (off inside `allOf`, whose parent
    /// checks the whole object).
    #[allow(clippy::too_many_lines)]
    fn validate_as(
        &self,
        schema: &Value,
        v: &Value,
        at: &str,
        strict: bool,
        errors: &mut Vec<String>,
    ) {
        let schema = self.resolve(schema);
        if schema.is_null() {
            errors.push(format!("{at}: a $ref the spec does not resolve"));
            return;
        }
        if let Some(types) = schema.get("type") {
            let names: Vec<&str> = match types {
                Value::String(s) => vec![s.as_str()],
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            if !names.iter().any(|t| is_type(v, t)) {
                errors.push(format!(
                    "{at}: {} where the spec has {}",
                    kind(v),
                    names.join(" or ")
                ));
                return;
            }
        }
        if let Some(c) = schema.get("const") {
            if c != v {
                errors.push(format!("{at}: {v} is not {c}"));
            }
        }
        if let Some(options) = schema["enum"].as_array() {
            if !options.contains(v) {
                errors.push(format!(
                    "{at}: {v} is not one of {}",
                    Value::from(options.clone())
                ));
            }
        }
        match v {
            Value::String(s) => {
                let n = s.chars().count() as u64;
                if schema["maxLength"].as_u64().is_some_and(|m| n > m) {
                    errors.push(format!(
                        "{at}: {n} characters, more than {}",
                        schema["maxLength"]
                    ));
                }
                if schema["minLength"].as_u64().is_some_and(|m| n < m) {
                    errors.push(format!(
                        "{at}: {n} characters, fewer than {}",
                        schema["minLength"]
                    ));
                }
                match schema["format"].as_str() {
                    Some("snowflake") if !is_snowflake(s) => {
                        errors.push(format!("{at}: {s:?} is not a snowflake"));
                    }
                    Some("date-time") if chrono::DateTime::parse_from_rfc3339(s).is_err() => {
                        errors.push(format!("{at}: {s:?} is not an RFC 3339 date-time"));
                    }
                    _ => {}
                }
            }
            Value::Number(n) => {
                let x = n.as_f64().unwrap_or(f64::NAN);
                if schema["minimum"].as_f64().is_some_and(|m| x < m) {
                    errors.push(format!("{at}: {n} is below {}", schema["minimum"]));
                }
                if schema["maximum"].as_f64().is_some_and(|m| x > m) {
                    errors.push(format!("{at}: {n} is above {}", schema["maximum"]));
                }
                if schema["format"] == "int32"
                    && n.as_i64().is_none_or(|i| i32::try_from(i).is_err())
                {
                    errors.push(format!("{at}: {n} is not an int32"));
                }
            }
            Value::Array(items) => {
                let n = items.len() as u64;
                if schema["maxItems"].as_u64().is_some_and(|m| n > m) {
                    errors.push(format!("{at}: {n} items, more than {}", schema["maxItems"]));
                }
                if schema["minItems"].as_u64().is_some_and(|m| n < m) {
                    errors.push(format!(
                        "{at}: {n} items, fewer than {}",
                        schema["minItems"]
                    ));
                }
                if schema["uniqueItems"] == true {
                    let distinct: BTreeSet<String> = items.iter().map(Value::to_string).collect();
                    if distinct.len() != items.len() {
                        errors.push(format!("{at}: items repeat"));
                    }
                }
                if let Some(item) = schema.get("items") {
                    for (i, x) in items.iter().enumerate() {
                        self.validate(item, x, &format!("{at}[{i}]"), errors);
                    }
                }
            }
            Value::Object(fields) => {
                let n = fields.len() as u64;
                if schema["maxProperties"].as_u64().is_some_and(|m| n > m) {
                    errors.push(format!(
                        "{at}: {n} properties, more than {}",
                        schema["maxProperties"]
                    ));
                }
                if schema["minProperties"].as_u64().is_some_and(|m| n < m) {
                    errors.push(format!(
                        "{at}: {n} properties, fewer than {}",
                        schema["minProperties"]
                    ));
                }
                let props = schema["properties"].as_object();
                for name in schema["required"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                {
                    if !fields.contains_key(name) {
                        errors.push(format!("{at}: `{name}` is required and missing"));
                    }
                }
                for (name, value) in fields {
                    if let Some(p) = props.and_then(|p| p.get(name)) {
                        self.validate(p, value, &format!("{at}.{name}"), errors);
                    } else if let Some(extra) =
                        schema.get("additionalProperties").filter(|a| a.is_object())
                    {
                        self.validate(extra, value, &format!("{at}.{name}"), errors);
                    }
                }
                let objectish = schema.get("properties").is_some()
                    || schema.get("allOf").is_some()
                    || schema.get("additionalProperties").is_some();
                if strict && objectish {
                    let mut known = BTreeSet::new();
                    if self.known(schema, &mut known) {
                        for name in fields.keys().filter(|k| !known.contains(*k)) {
                            errors.push(format!("{at}.{name}: a field the spec does not have"));
                        }
                    }
                }
            }
            _ => {}
        }
        for branch in schema["allOf"].as_array().into_iter().flatten() {
            self.validate_as(branch, v, at, false, errors);
        }
        for (word, exactly_one) in [("oneOf", true), ("anyOf", false)] {
            let Some(options) = schema[word].as_array() else {
                continue;
            };
            let mut fits = 0;
            let mut nearest: Option<Vec<String>> = None;
            for option in options {
                let mut found = Vec::new();
                self.validate(option, v, at, &mut found);
                if found.is_empty() {
                    fits += 1;
                } else if nearest.as_ref().is_none_or(|n| found.len() < n.len()) {
                    nearest = Some(found);
                }
            }
            if fits == 0 {
                let why = nearest.map(|n| n.join("; ")).unwrap_or_default();
                errors.push(format!("{at}: fits none of its {word} ({why})"));
            } else if exactly_one && fits > 1 {
                errors.push(format!("{at}: fits {fits} of its oneOf, where one must"));
            }
        }
    }
}

fn is_type(v: &Value, t: &str) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "string" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        _ => false,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `^(0|[1-9][0-9]*)$`, the spec's snowflake.
fn is_snowflake(s: &str) -> bool {
    s == "0" || (!s.is_empty() && !s.starts_with('0') && s.bytes().all(|b| b.is_ascii_digit()))
}
