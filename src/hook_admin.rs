//! Hooks created, replaced and deleted at runtime through the admin API. A hook's config is
//! the JSON form of a `[[hook]]` table, checked exactly like the config file: unknown keys
//! are refused, the name follows the same rule, and the hook is compiled (URL, filter,
//! template, headers, signing). The JSON as sent is what the store keeps (the parsed form
//! redacts secrets when serialised), and it is compiled again at every start.

use relayarr_actors::hooks::config::{HookConfig, OutboundConfig};
use relayarr_actors::hooks::delivery::{CompiledHook, HookConfigError};

use crate::error::ApiError;

/// Parses and validates a hook's JSON config.
pub fn compile(json: &str, outbound: &OutboundConfig) -> Result<CompiledHook, ApiError> {
    let mut de = serde_json::Deserializer::from_str(json);
    let cfg: HookConfig = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.to_string();
        if let Some(rest) = message.strip_prefix("unknown field `") {
            let field = rest.split('`').next().unwrap_or_default().to_owned();
            return ApiError::UnknownField {
                field,
                message: "see the [[hook]] keys in config/relayarr.example.toml".into(),
            };
        }
        if let Some(rest) = message.strip_prefix("missing field `") {
            let field = rest.split('`').next().unwrap_or_default().to_owned();
            return ApiError::MissingField {
                field,
                message: "a hook needs at least `name` and `url`".into(),
            };
        }
        let field = if path == "." { "body".to_owned() } else { path };
        ApiError::invalid(field, message)
    })?;
    if cfg.name.is_empty()
        || !cfg
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(ApiError::invalid(
            "name",
            "must be non-empty and use only letters, digits, `-` and `_`",
        ));
    }
    CompiledHook::compile(cfg, outbound).map_err(|e| match e {
        HookConfigError::Invalid { key, problem, .. } => ApiError::invalid(key, problem),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_admin_compile_names_the_bad_field() {
        let out = OutboundConfig::default();
        let ok = compile(
            r#"{"name":"a","url":"http://127.0.0.1:9/x","rate":"5/s"}"#,
            &out,
        );
        assert!(ok.is_ok(), "{:?}", ok.err());
        let err = compile(
            r#"{"name":"a","url":"http://127.0.0.1:9/x","rate":"fast"}"#,
            &out,
        )
        .expect_err("bad rate");
        assert_eq!(err.field(), Some("rate"), "{err}");
        let err = compile(r#"{"name":"a","url":"ftp://x"}"#, &out).expect_err("bad url");
        assert_eq!(err.field(), Some("url"), "{err}");
        let err =
            compile(r#"{"name":"a b","url":"http://127.0.0.1:9/"}"#, &out).expect_err("bad name");
        assert_eq!(err.field(), Some("name"));
        let err = compile(
            r#"{"name":"a","url":"http://127.0.0.1:9/","colour":1}"#,
            &out,
        )
        .expect_err("unknown key");
        assert_eq!(err.code(), "unknown_field");
        assert_eq!(err.field(), Some("colour"));
        let err = compile(r#"{"url":"http://127.0.0.1:9/"}"#, &out).expect_err("no name");
        assert_eq!(err.code(), "missing_field");
    }
}
