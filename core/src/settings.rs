//! Settings as data: partial settings (a URL query, a table of a settings file) laid over a
//! complete configuration through its serde form, so that a configuration struct declares its
//! settings, names and defaults once and every input reads them from there.
//!
//! Names are the serde names (those of `parameters.json`); a nested group of settings is a
//! nested object, written `group.name` in a query.

use serde_json::{Map, Number, Value};

/// `given` laid over `base`: objects merge key by key (recursively), anything else replaces.
pub fn overlay(base: &mut Value, given: Value) {
    match (base, given) {
        (Value::Object(base), Value::Object(given)) => {
            for (key, value) in given {
                match base.get_mut(&key) {
                    Some(slot) => overlay(slot, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, given) => *base = given,
    }
}

/// The keys of `given` that `known` does not have, as dotted paths (`schedule.kind`).
pub fn unknown_keys(given: &Value, known: &Value) -> Vec<String> {
    let mut out = Vec::new();
    collect_unknown(given, known, "", &mut out);
    out
}

fn collect_unknown(given: &Value, known: &Value, prefix: &str, out: &mut Vec<String>) {
    let (Value::Object(given), Value::Object(known)) = (given, known) else {
        return;
    };
    for (key, value) in given {
        let path = format!("{prefix}{key}");
        match known.get(key) {
            None => out.push(path),
            Some(k) => collect_unknown(value, k, &format!("{path}."), out),
        }
    }
}

/// The first given value whose kind cannot be what `known` holds there (a word where a number
/// goes, a single value where a group of settings goes): `name = value is not allowed: ...`.
/// Settings whose known value is `null` (optional ones) take any kind.
pub fn mistyped(given: &Value, known: &Value) -> Option<String> {
    mistyped_at(given, known, "")
}

fn mistyped_at(given: &Value, known: &Value, prefix: &str) -> Option<String> {
    let (Value::Object(given), Value::Object(known)) = (given, known) else {
        return None;
    };
    for (key, value) in given {
        let path = format!("{prefix}{key}");
        let Some(k) = known.get(key) else { continue };
        let allowed = match (k, value) {
            (Value::Object(_), Value::Object(_)) => {
                match mistyped_at(value, k, &format!("{path}.")) {
                    Some(e) => return Some(e),
                    None => continue,
                }
            }
            (Value::Object(group), _) => format!(
                "a group of settings ({})",
                group
                    .keys()
                    .map(|g| format!("{path}.{g}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            (Value::Number(_), Value::Number(_))
            | (Value::Bool(_), Value::Bool(_))
            | (Value::String(_), Value::String(_))
            | (Value::Null, _) => continue,
            (Value::Number(_), _) => "a number".into(),
            (Value::Bool(_), _) => "true or false".into(),
            (Value::String(s), _) => format!("a word (such as {s})"),
            (Value::Array(_), _) => "a list".into(),
        };
        return Some(format!(
            "{path} = {} is not allowed: {allowed}",
            shown(value)
        ));
    }
    None
}

/// A value as a query or a message writes it: strings without quotes.
pub fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// A URL query (`L=8&T=2.5&schedule.kind=cosine`, a leading `?` allowed) as an object: dotted
/// keys nest, later keys win; a value is a number if it reads as one (exactly: integers as
/// integers, others as the nearest `f64`), `true`/`false` a boolean, anything else a string.
pub fn query_object(query: &str) -> Value {
    let mut object = Value::Object(Map::new());
    for (key, value) in query
        .trim_start_matches('?')
        .split('&')
        .filter_map(|kv| kv.split_once('='))
    {
        overlay(&mut object, at_path(key, scalar(value)));
    }
    object
}

/// `value` at the dotted `path`: `at_path("a.b", 1)` is `{"a": {"b": 1}}`.
pub fn at_path(path: &str, value: Value) -> Value {
    path.rsplit('.').fold(value, |nested, part| {
        let mut m = Map::new();
        m.insert(part.to_string(), nested);
        Value::Object(m)
    })
}

/// The single settings of an object by dotted path (`schedule.kind`), groups opened.
pub fn leaves(value: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    push_leaves(value, "", &mut out);
    out
}

fn push_leaves(value: &Value, prefix: &str, out: &mut Vec<(String, Value)>) {
    let Value::Object(map) = value else { return };
    for (key, value) in map {
        match value {
            Value::Object(_) => push_leaves(value, &format!("{prefix}{key}."), out),
            v => out.push((format!("{prefix}{key}"), v.clone())),
        }
    }
}

fn scalar(text: &str) -> Value {
    if let Ok(u) = text.parse::<u64>() {
        return Value::Number(u.into());
    }
    if let Ok(i) = text.parse::<i64>() {
        return Value::Number(i.into());
    }
    // NaN and infinities are no JSON numbers: they stay words (and are refused as numbers).
    if let Some(n) = text.parse::<f64>().ok().and_then(Number::from_f64) {
        return Value::Number(n);
    }
    match text {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => Value::String(text.to_string()),
    }
}

/// An object as a URL query: nested objects as dotted keys, `null`s left out, numbers in their
/// shortest exact form (so [`query_object`] reads back the same numbers).
pub fn to_query(value: &Value) -> String {
    leaves(value)
        .into_iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| format!("{k}={}", shown(&v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn queries_nest_type_and_overlay() {
        let q = query_object("?L=8&T=2.5&seed=12345678901&s.kind=cosine&s.warmup=3&on=true&x=-1");
        assert_eq!(
            q,
            json!({"L": 8, "T": 2.5, "seed": 12345678901u64, "s": {"kind": "cosine", "warmup": 3},
                   "on": true, "x": -1})
        );
        let mut base =
            json!({"L": 4, "T": 1.0, "s": {"kind": "constant", "warmup": 100, "end": null}});
        overlay(&mut base, json!({"T": 2.5, "s": {"kind": "cosine"}}));
        assert_eq!(
            base,
            json!({"L": 4, "T": 2.5, "s": {"kind": "cosine", "warmup": 100, "end": null}})
        );
        assert_eq!(to_query(&base), "L=4&T=2.5&s.kind=cosine&s.warmup=100");
        assert_eq!(
            query_object(&to_query(&base)),
            json!({"L": 4, "T": 2.5, "s": {"kind": "cosine", "warmup": 100}})
        );
        // Floats come back exactly.
        for x in [0.1, 2.269185314213022, 1e-300, 6.02214076e23] {
            assert_eq!(query_object(&format!("x={x}"))["x"].as_f64(), Some(x));
        }
        assert_eq!(query_object("x=nan")["x"], json!("nan"));
    }

    #[test]
    fn unknown_and_mistyped_settings_are_named() {
        let known = json!({"L": 4, "lr": 0.1, "on": true, "clip": null, "s": {"kind": "constant"}});
        assert_eq!(
            unknown_keys(
                &json!({"L": 8, "lrr": 1, "s": {"kind": "x", "end": 3}}),
                &known
            ),
            ["lrr", "s.end"]
        );
        let bad = |given| mistyped(&given, &known);
        assert_eq!(
            bad(json!({"lr": "fast"})).unwrap(),
            "lr = fast is not allowed: a number"
        );
        assert_eq!(
            bad(json!({"on": "yes"})).unwrap(),
            "on = yes is not allowed: true or false"
        );
        assert!(
            bad(json!({"s": "cosine"}))
                .unwrap()
                .contains("a group of settings (s.kind)")
        );
        assert!(
            bad(json!({"s": {"kind": 3}}))
                .unwrap()
                .starts_with("s.kind = 3")
        );
        assert_eq!(
            bad(json!({"clip": 2.0, "L": 16, "s": {"kind": "cosine"}})),
            None
        );
    }
}
