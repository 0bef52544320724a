//! Looking up user-chosen template keys loosely, for senders whose JSON keys a person typed
//! (Jellyfin Handlebars templates, custom scripts).
//!
//! A key matches exactly first; failing that, any key with the same *loose form*: ASCII
//! lower case with `_`, `-` and spaces removed, so `NotificationType`, `notificationType`,
//! `notification_type` and `Notification-Type` are one key. A key with dots
//! (`Item.Name`) also walks into nested objects. Never use this for Plex, whose JSON has
//! keys differing only by case (`guid` and `Guid`).

use serde_json::Value;

use super::lenient::{field, int, text};
use super::tautulli::TemplateKeys;

/// The loose form of a key: ASCII lower case, without `_`, `-` or spaces.
pub(crate) fn loose(key: &str) -> String {
    key.chars()
        .filter(|c| !matches!(c, '_' | '-' | ' '))
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// `v[key]` (non-null), by exact key, else by loose form, else as a dotted path.
pub(crate) fn field_loose<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    one_level(v, key).or_else(|| {
        if !key.contains('.') {
            return None;
        }
        key.split('.')
            .try_fold(v, |cur, seg| one_level(cur, seg))
            .filter(|x| !x.is_null())
    })
}

fn one_level<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    field(v, key).or_else(|| {
        let want = loose(key);
        if want.is_empty() {
            return None;
        }
        v.as_object()?
            .iter()
            .find(|(k, x)| !x.is_null() && loose(k) == want)
            .map(|(_, x)| x)
    })
}

/// The first of `keys` that holds a non-blank text value (numbers and booleans as text).
pub(crate) fn text_of(v: &Value, keys: &TemplateKeys) -> Option<String> {
    keys.keys()
        .iter()
        .find_map(|k| field_loose(v, k).and_then(text))
}

/// The first of `keys` that holds anything but `null` or a blank string.
pub(crate) fn value_of<'a>(v: &'a Value, keys: &TemplateKeys) -> Option<&'a Value> {
    keys.keys().iter().find_map(|k| {
        field_loose(v, k).filter(|x| !matches!(x, Value::String(s) if s.trim().is_empty()))
    })
}

/// The first of `keys` that holds an integer in `i32`; each key is also tried with the
/// zero-padded suffixes the Jellyfin plugin offers (`SeasonNumber00`, `SeasonNumber000`),
/// since a template may copy only the padded form.
pub(crate) fn i32_of(v: &Value, keys: &TemplateKeys) -> Option<i32> {
    keys.keys().iter().find_map(|k| {
        [k.clone(), format!("{k}00"), format!("{k}000")]
            .iter()
            .find_map(|k| field_loose(v, k).and_then(int))
            .and_then(|n| i32::try_from(n).ok())
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn keys_loose_form_joins_the_common_spellings() {
        for k in [
            "NotificationType",
            "notificationType",
            "notification_type",
            "NOTIFICATION_TYPE",
            "Notification-Type",
            "notification type",
        ] {
            assert_eq!(loose(k), "notificationtype", "{k}");
        }
    }

    #[test]
    fn keys_exact_match_wins_over_a_loose_one() {
        let v = json!({"name": "loose", "Name": "exact"});
        assert_eq!(field_loose(&v, "Name"), Some(&json!("exact")));
        assert_eq!(field_loose(&v, "name"), Some(&json!("loose")));
        assert!(field_loose(&v, "NAME").is_some());
    }

    #[test]
    fn keys_null_and_blank_fall_through_to_the_next_key() {
        let v = json!({"event": null, "Event_Type": "  ", "type": "ItemAdded"});
        let keys = TemplateKeys::new(["event", "eventType", "type"]);
        assert_eq!(text_of(&v, &keys).as_deref(), Some("ItemAdded"));
        assert_eq!(value_of(&v, &keys), Some(&json!("ItemAdded")));
    }

    #[test]
    fn keys_dotted_paths_walk_nested_objects() {
        let v = json!({"item": {"series_name": "The Expanse", "n": null}});
        let keys = TemplateKeys::new(["Item.SeriesName"]);
        assert_eq!(text_of(&v, &keys).as_deref(), Some("The Expanse"));
        assert_eq!(field_loose(&v, "item.n"), None);
        assert_eq!(field_loose(&v, "item.missing.deeper"), None);
    }

    #[test]
    fn keys_padded_twins_are_read_as_numbers() {
        let v = json!({"season_number00": "03", "EpisodeNumber": 5});
        assert_eq!(i32_of(&v, &"SeasonNumber".into()), Some(3));
        assert_eq!(i32_of(&v, &"episodeNumber".into()), Some(5));
        assert_eq!(i32_of(&json!({"x": "99999999999"}), &"x".into()), None);
    }

    #[test]
    fn keys_separator_only_key_never_matches_everything() {
        let v = json!({"_": "a", "-": "b"});
        assert_eq!(field_loose(&v, "__"), None);
        assert_eq!(field_loose(&v, "_"), Some(&json!("a")));
    }
}
