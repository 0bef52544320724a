//! Readers that accept what the senders actually send: numbers as strings (Tautulli, Lidarr
//! `trackNumber`), strings as numbers (Plex `librarySectionID`), `null` for absent (Tautulli
//! templates), blank strings for absent (*arr `applicationUrl: ""`). None of them panics.

use serde_json::Value;

use crate::model::NormalizedEvent;

/// `v[key]`, with JSON `null` treated like an absent key.
pub(crate) fn field<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !x.is_null())
}

/// A non-blank string; numbers and booleans are rendered as text.
pub(crate) fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

pub(crate) fn text_at(v: &Value, key: &str) -> Option<String> {
    field(v, key).and_then(text)
}

/// An integer from a JSON number or a numeric string (`3`, `"3"`, `" 03 "`, `"3.0"`).
pub(crate) fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().and_then(whole)),
        Value::String(s) => {
            let s = s.trim();
            s.parse::<i64>()
                .ok()
                .or_else(|| s.parse::<f64>().ok().and_then(whole))
        }
        _ => None,
    }
}

/// A float that is a whole number well inside `i64`, as an integer.
fn whole(f: f64) -> Option<i64> {
    // 2^53: beyond it f64 no longer holds every integer, so the value is not trustworthy.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    (f.is_finite() && f.fract() == 0.0 && f.abs() <= EXACT).then_some(f as i64)
}

pub(crate) fn int_at(v: &Value, key: &str) -> Option<i64> {
    field(v, key).and_then(int)
}

/// A positive id. The *arr apps send `0` for "unknown" (`tmdbId: 0` on a Sonarr series
/// without one, the Test payload's `tvMazeId: 0`), so zero and below mean absent.
pub(crate) fn id(v: &Value) -> Option<i64> {
    int(v).filter(|n| *n > 0)
}

pub(crate) fn id_at(v: &Value, key: &str) -> Option<i64> {
    field(v, key).and_then(id)
}

pub(crate) fn i32_at(v: &Value, key: &str) -> Option<i32> {
    int_at(v, key).and_then(|n| i32::try_from(n).ok())
}

/// A year; `0` (the *arr default when unknown) is absent.
pub(crate) fn year_at(v: &Value, key: &str) -> Option<i32> {
    i32_at(v, key).filter(|y| *y > 0)
}

/// A boolean from `true`, `"True"`, `"1"`, `1`, `"yes"` (and their negatives).
pub(crate) fn flag(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_f64().map(|n| n != 0.0),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Some(true),
            "false" | "0" | "no" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

pub(crate) fn flag_at(v: &Value, key: &str) -> Option<bool> {
    field(v, key).and_then(flag)
}

/// A list of labels: an array of strings or of `{"tag": …}` objects (Plex `Label`), or one
/// comma-separated string (custom senders). Blank entries are dropped.
pub(crate) fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items
            .iter()
            .filter_map(|x| match x {
                Value::Object(_) => text_at(x, "tag"),
                other => text(other),
            })
            .collect(),
        Value::String(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// The object elements of the array at `key`; anything else yields nothing.
pub(crate) fn objects<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    field(v, key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|x| x.is_object())
}

/// The object at `key`, if it is one.
pub(crate) fn object<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    field(v, key).filter(|x| x.is_object())
}

/// Sets a detail unless the value is absent or the detail is already set (the first,
/// most specific source wins).
pub(crate) fn put(ev: &mut NormalizedEvent, key: &str, value: Option<String>) {
    if let Some(value) = value {
        ev.details.entry(key.to_owned()).or_insert(value);
    }
}
