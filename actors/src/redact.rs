//! How secrets look when something is shown: one URL mask for logs, errors, `Debug`, the
//! admin API and the CLI, and a [`Redactor`] that cuts secret values out of text kept in
//! history, however the text encodes them (as is, JSON-escaped, or percent-encoded).

use std::fmt;

/// What a secret is replaced with.
pub const REDACTED: &str = "<redacted>";

/// A URL as it may be shown: scheme, host, port and the first path segment. The password
/// (and a lone user name, which often is a token) becomes `***`, later path segments `…`
/// (Discord and Slack put their tokens there), and a query `?…`.
///
/// `https://discord.com/api/webhooks/ID/TOKEN?wait=true` → `https://discord.com/api/…?…`,
/// `postgres://relayarr:pw@db/relayarr` → `postgres://relayarr:***@db/relayarr`. Text that
/// does not parse as a URL is not shown at all.
pub fn mask_url(url: &str) -> String {
    let Ok(u) = reqwest::Url::parse(url.trim()) else {
        return "<not a URL>".to_owned();
    };
    let userinfo = match (u.username(), u.password()) {
        ("", None) => String::new(),
        (user, Some(_)) if !user.is_empty() => format!("{user}:***@"),
        _ => "***@".to_owned(),
    };
    let host = u.host_str().unwrap_or_default();
    let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
    let mut segments = u
        .path_segments()
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty());
    let path = match (segments.next(), segments.next().is_some()) {
        (Some(first), true) => format!("/{first}/…"),
        (Some(first), false) => format!("/{first}"),
        (None, _) => String::new(),
    };
    let query = if u.query().is_some() { "?…" } else { "" };
    let sep = if u.cannot_be_a_base() { ":" } else { "://" };
    format!("{}{sep}{userinfo}{host}{port}{path}{query}", u.scheme())
}

/// The parts of a URL that are likely secrets, for a [`Redactor`]: user name and password,
/// the values of query parameters that name a credential (`token`, `key`, `secret`, `sig`,
/// `auth`, `pass`…) or are 16 characters or longer, and path segments after the first that
/// are 16 characters or longer (Discord's and Slack's webhook tokens). Shorter segments are
/// left alone: redacting `api` or `webhooks` everywhere would only blank out excerpts.
pub fn url_secrets(url: &reqwest::Url) -> Vec<String> {
    const LONG: usize = 16;
    let mut out = Vec::new();
    if !url.username().is_empty() {
        out.push(decode(url.username()));
    }
    if let Some(p) = url.password() {
        out.push(decode(p));
    }
    for (k, v) in url.query_pairs() {
        let k = k.to_ascii_lowercase();
        let named = ["token", "key", "secret", "sig", "auth", "pass", "code"]
            .iter()
            .any(|n| k.contains(n));
        if named || v.chars().count() >= LONG {
            out.push(v.into_owned());
        }
    }
    for seg in url.path_segments().into_iter().flatten().skip(1) {
        let seg = decode(seg);
        if seg.chars().count() >= LONG {
            out.push(seg);
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

fn decode(s: &str) -> String {
    percent_decode(s.as_bytes())
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_else(|| s.to_owned())
}

fn percent_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            out.push(hex_byte(s.get(i + 1..i + 3)?)?);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Some(out)
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn hex_byte(two: &[u8]) -> Option<u8> {
    match two {
        [h, l] => Some(hex_val(*h)? << 4 | hex_val(*l)?),
        _ => None,
    }
}

/// How one occurrence of a secret may be written in a body.
#[derive(Clone, Copy)]
enum Encoding {
    /// Byte for byte.
    Plain,
    /// Inside a JSON string (`1`), or a JSON string inside a JSON string (`2`, a receiver
    /// echoing its request body): any character may be an escape (`\"`, `\\`, `\/`, `\n`,
    /// `\u00XX`, a surrogate pair), so a backslash always starts one.
    Json(u8),
    /// Percent-encoded (a query string, a form body): `%XX` is one byte, either case.
    Percent,
}

/// Secret values to cut out of text before it is kept (history excerpts, test-fire reports).
///
/// Matching is on the decoded text, so `"a\"b"` in a JSON body, `a%22b` in a query string,
/// `a"b` as is, and `a\\\"b` in a JSON body echoed inside another are all found for the
/// secret `a"b`, as are mixed forms such as `\u0061"b`. `Debug` shows only how many
/// secrets it holds.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Each secret, longest first (so a secret containing another is cut whole).
    secrets: Vec<String>,
    /// The bytes a secret can start at, in any encoding (see [`Redactor::excerpt`]).
    starts: ByteSet,
}

/// A set of byte values.
#[derive(Clone, Copy, Default)]
struct ByteSet([u64; 4]);

impl ByteSet {
    fn insert(&mut self, b: u8) {
        self.0[usize::from(b >> 6)] |= 1 << (b & 63);
    }

    fn contains(&self, b: u8) -> bool {
        self.0[usize::from(b >> 6)] & (1 << (b & 63)) != 0
    }
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

impl Redactor {
    /// A redactor for `secrets` (empty ones are ignored).
    pub fn new<S: AsRef<str>>(secrets: impl IntoIterator<Item = S>) -> Self {
        let mut r = Redactor::default();
        r.extend(secrets);
        r
    }

    /// Adds more secrets.
    pub fn extend<S: AsRef<str>>(&mut self, secrets: impl IntoIterator<Item = S>) {
        for s in secrets {
            let s = s.as_ref();
            if !s.is_empty() && !self.secrets.iter().any(|have| have == s) {
                self.secrets.push(s.to_owned());
            }
        }
        self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        // A secret, in any encoding, can only start at one of these bytes: its own first
        // byte (never a UTF-8 continuation byte), a backslash or `%`.
        let mut starts = ByteSet::default();
        for secret in &self.secrets {
            starts.insert(secret.as_bytes()[0]);
        }
        if !self.secrets.is_empty() {
            starts.insert(b'\\');
            starts.insert(b'%');
        }
        self.starts = starts;
    }

    /// How many secrets it holds.
    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    /// True when it holds none.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// How far past its start an encoded secret may reach (12 bytes per byte covers every
    /// form matched short of escaping each escape again): a reader that stops early reads
    /// this much beyond what it keeps.
    pub fn lookahead(&self) -> usize {
        self.secrets.first().map_or(0, |s| s.len() * 12)
    }

    /// `text` with every secret replaced by `<redacted>`.
    pub fn redact(&self, text: &str) -> String {
        self.excerpt(text, true, usize::MAX)
    }

    /// At most `max` bytes of `text` with its secrets redacted: the same as redacting the whole
    /// text and cutting it (at a character boundary), so a cut never leaves part of a secret.
    /// `complete` says whether `text` is all there is; when it is a prefix of something
    /// longer, its last [`lookahead`](Self::lookahead) bytes are not shown, since a secret
    /// starting there may continue past its end.
    pub fn excerpt(&self, text: &str, complete: bool, max: usize) -> String {
        let safe_end = if complete {
            text.len()
        } else {
            text.len().saturating_sub(self.lookahead())
        };
        // The text between two bytes where a secret may start is copied in one piece (this
        // ran once per character, and was 4.5% of the server's CPU with 8 saturated hooks).
        let starts = self.starts;
        let bytes = text.as_bytes();
        let mut out = String::with_capacity(text.len().min(max));
        let mut i = 0;
        'scan: while i < safe_end && out.len() < max {
            let next = bytes[i..safe_end]
                .iter()
                .position(|&b| starts.contains(b))
                .map_or(safe_end, |at| i + at);
            if next > i {
                // Up to `max` (the cut below trims the last character's overhang).
                let mut end = next.min(i.saturating_add(max - out.len()));
                while !text.is_char_boundary(end) {
                    end += 1;
                }
                out.push_str(&text[i..end]);
                i = end;
                continue;
            }
            for secret in &self.secrets {
                if let Some(end) = match_any(text, i, secret) {
                    out.push_str(REDACTED);
                    i = end;
                    continue 'scan;
                }
            }
            let ch_len = text[i..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&text[i..i + ch_len]);
            i += ch_len;
        }
        if out.len() > max {
            let mut cut = max;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
        }
        out
    }
}

/// Where an occurrence of `secret` starting at `i` ends, in any [`Encoding`].
fn match_any(text: &str, i: usize, secret: &str) -> Option<usize> {
    let first = text.as_bytes()[i];
    if first != secret.as_bytes()[0] && first != b'\\' && first != b'%' {
        return None;
    }
    [
        Encoding::Plain,
        Encoding::Json(1),
        Encoding::Json(2),
        Encoding::Percent,
    ]
    .into_iter()
    .find_map(|enc| match_at(text, i, secret, enc))
    .filter(|&end| text.is_char_boundary(end))
}

/// Where `secret`, written in `enc`, ends if it starts at `i`.
fn match_at(text: &str, mut i: usize, secret: &str, enc: Encoding) -> Option<usize> {
    match enc {
        Encoding::Plain => text[i..].starts_with(secret).then_some(i + secret.len()),
        Encoding::Json(depth) => {
            for want in secret.chars() {
                let (got, next) = json_char(text, i, depth)?;
                if got != want {
                    return None;
                }
                i = next;
            }
            Some(i)
        }
        Encoding::Percent => {
            let bytes = text.as_bytes();
            for &want in secret.as_bytes() {
                let (got, next) = match *bytes.get(i)? {
                    b'%' => (hex_byte(bytes.get(i + 1..i + 3)?)?, i + 3),
                    b => (b, i + 1),
                };
                if got != want {
                    return None;
                }
                i = next;
            }
            Some(i)
        }
    }
}

/// The character at `i` of text that is JSON-string-escaped `depth` times over, and where it
/// ends: at depth 0 the character itself; above, a backslash (itself decoded at the depth
/// below) starts an escape whose characters are decoded at the depth below too.
fn json_char(text: &str, i: usize, depth: u8) -> Option<(char, usize)> {
    if depth == 0 {
        let c = text.get(i..)?.chars().next()?;
        return Some((c, i + c.len_utf8()));
    }
    let below = |at: usize| json_char(text, at, depth - 1);
    let (c, j) = below(i)?;
    if c != '\\' {
        return Some((c, j));
    }
    let (e, k) = below(j)?;
    let simple = match e {
        '"' => '"',
        '\\' => '\\',
        '/' => '/',
        'b' => '\u{8}',
        'f' => '\u{c}',
        'n' => '\n',
        'r' => '\r',
        't' => '\t',
        'u' => {
            let unit = |mut at: usize| -> Option<(u32, usize)> {
                let mut v = 0;
                for _ in 0..4 {
                    let (h, next) = below(at)?;
                    v = v * 16 + h.to_digit(16)?;
                    at = next;
                }
                Some((v, at))
            };
            let (hi, after) = unit(k)?;
            if !(0xD800..0xDC00).contains(&hi) {
                return Some((char::from_u32(hi)?, after));
            }
            let (slash, a) = below(after)?;
            let (u, b) = below(a)?;
            if slash != '\\' || u != 'u' {
                return None;
            }
            let (lo, end) = unit(b)?;
            if !(0xDC00..0xE000).contains(&lo) {
                return None;
            }
            let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
            return Some((char::from_u32(c)?, end));
        }
        _ => return None,
    };
    Some((simple, k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_url_hides_tokens_passwords_and_queries() {
        for (url, want) in [
            (
                "https://discord.com/api/webhooks/123456/SECRETTOKEN?wait=true",
                "https://discord.com/api/…?…",
            ),
            (
                "https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXX",
                "https://hooks.slack.com/services/…",
            ),
            (
                "https://user:hunter2@example.com/hook",
                "https://user:***@example.com/hook",
            ),
            (
                "https://tok3n@example.com/hook",
                "https://***@example.com/hook",
            ),
            (
                "http://gotify:8080/message?token=abc",
                "http://gotify:8080/message?…",
            ),
            (
                "postgres://relayarr:pw@db:5432/relayarr?sslmode=require&password=x",
                "postgres://relayarr:***@db:5432/relayarr?…",
            ),
            ("http://10.0.0.2:8080/hook", "http://10.0.0.2:8080/hook"),
            ("not a url with s3cret", "<not a URL>"),
        ] {
            assert_eq!(mask_url(url), want, "{url}");
        }
    }

    #[test]
    fn url_secrets_finds_tokens_but_not_plain_path_words() {
        let u = reqwest::Url::parse(
            "https://u:p%40ss@discord.com/api/webhooks/123/AbCdEfGhIjKlMnOpQrSt?wait=true&token=t0k",
        )
        .expect("url");
        let s = url_secrets(&u);
        for want in ["u", "p@ss", "t0k", "AbCdEfGhIjKlMnOpQrSt"] {
            assert!(s.iter().any(|x| x == want), "{want} missing from {s:?}");
        }
        for not in ["api", "webhooks", "123", "true"] {
            assert!(!s.iter().any(|x| x == not), "{not} in {s:?}");
        }
    }

    #[test]
    fn redact_finds_plain_json_escaped_and_percent_encoded_secrets() {
        let secret = r#"p"a\s/s<é>"#;
        let r = Redactor::new([secret]);
        let json = serde_json::to_string(secret).expect("json");
        for text in [
            format!("x {secret} y"),
            format!("{{\"k\":{json}}}"),
            // `/` escaped, as PHP and some JSON encoders write it.
            format!("{{\"k\":{}}}", json.replace('/', "\\/")),
            // Every character as `\u00XX`, and `é` as `\u00e9`.
            r#"{"k":"\u0070\u0022\u0061\u005C\u0073\u002F\u0073\u003C\u00e9\u003E"}"#.into(),
            // Mixed forms.
            r#"{"k":"p\"a\\s\/s\u003c\u00E9>"}"#.into(),
            "q=p%22a%5Cs%2Fs%3C%C3%A9%3E&x=1".into(),
            // A JSON body echoed inside a JSON string, its `<` written `\u003c` inside.
            r#"{"body":"{\"k\":\"p\\\"a\\\\s/s\\u003c\\u00e9>\"}"}"#.into(),
        ] {
            let out = r.redact(&text);
            assert!(out.contains(REDACTED), "not redacted: {text} -> {out}");
            for piece in ["p\"a", "p\\\"a", "\\u0070\\u0022", "p%22"] {
                assert!(!out.contains(piece), "{piece} left in {out}");
            }
        }
        // Astral characters as surrogate pairs.
        let r = Redactor::new(["k🔑y"]);
        assert_eq!(r.redact(r#""k\ud83d\udd11y""#), format!("\"{REDACTED}\""));
        // Nothing else is touched.
        assert_eq!(r.redact("a \\ b % c é"), "a \\ b % c é");
    }

    #[test]
    fn redact_finds_secrets_added_later() {
        // The delivery path adds each request's signature to the hook's redactor; a secret
        // whose first byte no earlier secret shares must still be found.
        let mut r = Redactor::new(["alpha-secret"]);
        r.extend(["zulu-signature"]);
        assert_eq!(
            r.redact("a alpha-secret b zulu-signature c"),
            "a <redacted> b <redacted> c"
        );
        assert_eq!(r.redact("a%7Aulu-signature"), "a<redacted>");
    }

    #[test]
    fn redact_then_cut_never_leaves_a_prefix() {
        let secret = "0123456789abcdef-SECRET";
        let r = Redactor::new([secret]);
        for at in 1000..1024 {
            let text = format!("{}{secret}{}", "x".repeat(at), "y".repeat(100));
            let out = r.excerpt(&text, true, 1024);
            assert!(out.len() <= 1024);
            assert!(!out.contains("0123"), "prefix of the secret left at {at}");
        }
        // A prefix of a longer text: its tail may hold the start of a secret.
        let text = format!("{}{}", "x".repeat(1000), &secret[..10]);
        let out = r.excerpt(&text, false, 1024);
        assert!(!out.contains("0123"), "{out}");
        // Long secrets replaced by the short marker do not pull in the unread tail.
        let text = format!("{}{}", secret.repeat(60), &secret[..5]);
        let out = r.excerpt(&text, false, 1024);
        assert!(!out.contains("01234"), "{out}");
    }

    /// The scan before it copied text between secrets in one piece: one character at a time.
    fn excerpt_per_char(r: &Redactor, text: &str, complete: bool, max: usize) -> String {
        let safe_end = if complete {
            text.len()
        } else {
            text.len().saturating_sub(r.lookahead())
        };
        let mut out = String::new();
        let mut i = 0;
        'scan: while i < safe_end && out.len() < max {
            for secret in &r.secrets {
                if let Some(end) = match_any(text, i, secret) {
                    out.push_str(REDACTED);
                    i = end;
                    continue 'scan;
                }
            }
            let ch_len = text[i..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&text[i..i + ch_len]);
            i += ch_len;
        }
        if out.len() > max {
            let mut cut = max;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
        }
        out
    }

    proptest::proptest! {
        #[test]
        fn redact_excerpt_matches_the_per_character_scan(
            pieces in proptest::collection::vec(
                proptest::prop_oneof![
                    "[a-z %\\\\\"é🔑]{0,12}",
                    proptest::strategy::Just("s3c%r\"et".to_string()),
                    proptest::strategy::Just("s3c%25r%5C%22et".to_string()),
                    proptest::strategy::Just("s3c\\u0025r\\\\\\\"et".to_string()),
                    proptest::strategy::Just("é🔑k".to_string()),
                    // The first character encoded: only `%` or a backslash marks where it starts.
                    proptest::strategy::Just("%733c%25r%22et".to_string()),
                    proptest::strategy::Just("\\u00733c%r\\\"et".to_string()),
                ],
                0..24,
            ),
            secrets in proptest::sample::subsequence(vec!["s3c%r\"et", "é🔑k", "%r", "zz"], 0..=4),
            complete in proptest::bool::ANY,
            max in proptest::prop_oneof![0usize..200, proptest::strategy::Just(usize::MAX)],
        ) {
            let text: String = pieces.concat();
            let r = Redactor::new(secrets);
            proptest::prop_assert_eq!(
                r.excerpt(&text, complete, max),
                excerpt_per_char(&r, &text, complete, max)
            );
        }
    }

    #[test]
    fn redact_debug_shows_no_secret() {
        let r = Redactor::new(["hunter22"]);
        assert_eq!(format!("{r:?}"), "Redactor(1 secrets)");
    }
}
